"""The example Accelerate configs of the README's scale-out section parse, and their FSDP / DeepSpeed sections
construct Accelerate's plugins (FSDP and DeepSpeed themselves need GPUs and are not run here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


@pytest.mark.parametrize("name,kind", [("ddp_cpu", "MULTI_CPU"), ("ddp_gpu", "MULTI_GPU"), ("fsdp", "FSDP"),
                                       ("deepspeed_zero2", "DEEPSPEED")])  # fmt: skip
def test_config_parses_as_an_accelerate_cluster_config(name, kind):
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig(**yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()))  # unknown keys raise TypeError
    assert str(cfg.distributed_type).endswith(kind)
    assert cfg.num_processes >= 2


def test_fsdp_section_builds_the_plugin():
    from accelerate.utils import FullyShardedDataParallelPlugin

    section = yaml.safe_load((CONFIGS / "fsdp.yaml").read_text())["fsdp_config"]
    # accelerate launch passes fsdp_<name> as the plugin's <name> (fsdp_version keeps its prefix)
    kwargs = {k if k == "fsdp_version" else k.removeprefix("fsdp_"): v for k, v in section.items()}
    plugin = FullyShardedDataParallelPlugin(**kwargs)
    assert plugin.fsdp_version == 2 and "SHARDED" in str(plugin.state_dict_type)


def test_deepspeed_section_builds_the_plugin():
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin(**yaml.safe_load((CONFIGS / "deepspeed_zero2.yaml").read_text())["deepspeed_config"])
    assert plugin.zero_stage == 2
