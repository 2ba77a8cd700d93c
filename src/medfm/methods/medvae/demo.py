"""``medfm demo`` step: train a tiny 2D MedVAE on chest X-ray phantoms, encode/decode, compare with bicubic."""

from __future__ import annotations

from pathlib import Path

#: 40 steps beat bicubic by a few dB; 400 (about 30 s on 2 cores) give a clear margin (issue 29).
STEPS = 400


def run_demo(out_dir: Path, seed: int):
    """Small real run (seconds): stage-1 training, held-out evaluation with an image grid, encode + decode.

    Writes ``out_dir/train``, ``out_dir/encode``, ``out_dir/decode`` run directories and ``out_dir/report.html``
    (original / reconstruction / bicubic / error-map grid and the fidelity table).
    """
    import torch

    from medfm.core.config import from_dict
    from medfm.core.report import Report, save_figure
    from medfm.demo import Headline, StepOutcome
    from medfm.methods.medvae.config import DecodeConfig, EncodeConfig, TrainConfig
    from medfm.methods.medvae.data import split_items
    from medfm.methods.medvae.encode import run_decode, run_encode
    from medfm.methods.medvae.evaluate import comparison_figure
    from medfm.methods.medvae.model import load_model
    from medfm.methods.medvae.train import data_items, run_train

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    out_dir = Path(out_dir)
    train_cfg = from_dict(TrainConfig, {
        "output_dir": str(out_dir / "train"), "seed": seed, "device": "cpu",
        "model": {"preset": "tiny_4_1_2d"},
        "data": {"source": "phantom:cxr", "n": 32, "size": 32},
        "loss": {"disc_start": 10_000},
        "optim": {"steps": STEPS, "batch_size": 8, "lr": 2e-3, "checkpoint_every": 100, "log_every": 20},
    })  # fmt: skip
    run_train(train_cfg)
    ckpt = out_dir / "train" / "checkpoints" / "final"
    run_encode(
        from_dict(
            EncodeConfig,
            {
                "output_dir": str(out_dir / "encode"),
                "seed": seed,
                "device": "cpu",
                "model": str(ckpt),
                "input": "phantom:cxr",
                "data": {"n": 4, "size": 34},
            },
        )
    )
    run_decode(from_dict(DecodeConfig, {"output_dir": str(out_dir / "decode"), "device": "cpu", "model": str(ckpt),
                                        "input": str(out_dir / "encode" / "latents.csv")}))  # fmt: skip
    from medfm.core.results import Results

    res = Results.load(out_dir / "train" / "results.json")
    model = load_model(str(ckpt))
    val = split_items(data_items(train_cfg, 2), "val")
    rep = Report("MedVAE demo: 32x32 chest X-ray phantoms, 4x per-axis downsizing (16x fewer values)")
    key = save_figure(out_dir / "reconstructions.png", comparison_figure(model, val, n=4), (
        f"Held-out 32 px chest X-ray phantoms: original, MedVAE reconstruction from a 4x smaller (per axis) latent, "
        f"bicubic up-sampling of the image down-sized to the latent's size, and absolute error maps on the [-1, 1] "
        f"intensity scale. Tiny model, {STEPS} steps on CPU."))  # fmt: skip
    rep.add_figure("Original, MedVAE reconstruction, bicubic at the latent size, error maps", key)
    rep.add_metrics({k: v for k, v in res.metrics.items() if "gain" in k or k in ("psnr", "ms_ssim")},
                    heading="Held-out fidelity (MedVAE vs bicubic)")  # fmt: skip
    rep.add_links("Runs", [("training", "train/report.html", "stage 1"), ("encode", "encode/report.html", "latents"),
                           ("decode", "decode/report.html", "images")])  # fmt: skip
    path = rep.save(out_dir / "report.html")
    m = res.metrics
    summary = (
        f"tiny 2D MedVAE, {STEPS} steps: PSNR {m['psnr'].value:.1f} dB vs bicubic {m['psnr_bicubic'].value:.1f} dB, "
        f"MS-SSIM {m['ms_ssim'].value:.3f} vs {m['ms_ssim_bicubic'].value:.3f}; encode+decode of 4 images"
    )
    gain = m["psnr_gain_vs_bicubic"]
    return StepOutcome(path, summary, figure=key, benchmark="medvae",
                       smoke=gain.value is None or gain.ci is None or gain.ci[0] <= 0,  # measured, not assumed
                       headline=Headline.of("held-out PSNR gain over bicubic", m["psnr_gain_vs_bicubic"], "dB",
                                            compare=f"MedVAE {m['psnr'].value:.1f} dB, bicubic "
                                                    f"{m['psnr_bicubic'].value:.1f} dB"))  # fmt: skip
