from __future__ import annotations

import json

import torch

from medfm.cli import main
from medfm.core.cards import Capabilities, Training, TrainingData, card_from_run
from medfm.core.config import CommonOptions
from medfm.core.hub import save_pretrained
from medfm.core.results import Metric
from medfm.core.runs import Run


def trained_model_dir(tmp_path, complete: bool = True):
    """A tiny real training run (linear regression) whose checkpoint carries a card filled from the run."""
    run_dir = tmp_path / "runs" / "toy"
    with Run("toy", "train", CommonOptions(output_dir=str(run_dir), seed=0)) as run:
        torch.manual_seed(0)
        x = torch.randn(64, 3)
        y = x @ torch.tensor([1.0, -2.0, 0.5])
        model = torch.nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(50):
            loss = torch.nn.functional.mse_loss(model(x).squeeze(1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.metrics.log(step, loss=loss)
        res = run.new_results()
        res.add("mse", Metric(loss.item(), n=64, higher_is_better=False))
        run.save_results(res)
        card = card_from_run(
            run.dir,
            name="toy-linear",
            method="toy",
            model=model,
            seconds=1.8,
            data=TrainingData(
                size=64,
                unit="samples",
                modalities=["other"],
                annotation="manual",
                sources=["synthetic"],
                synthetic=True,
            ),
            training=Training(
                paradigm=["supervised"], objective="MSE", architecture="linear", steps=50, samples_seen=50 * 64
            ),
            capabilities=Capabilities(supported=["fine-tuning"] if complete else []),
            intended_use="testing",
            limitations=["toy"],
        )
        save_pretrained(run.checkpoints / "final", model.state_dict(), {"medfm_class": "x:y"}, card=card)
    return run_dir / "checkpoints" / "final", loss.item()


def test_card_filled_from_run(tmp_path):
    ckpt, loss = trained_model_dir(tmp_path)
    card = json.loads((ckpt / "card.json").read_text())
    assert card["training"]["parameters"] == 4 and card["training"]["device"] == "cpu"
    assert card["training"]["device_hours"] == 1.8 / 3600 and card["training"]["config"]["seed"] == 0
    assert card["evaluation"][0]["metric"] == "mse" and card["evaluation"][0]["value"] == loss


def test_card_cli_verbs(tmp_path, capsys):
    ckpt, _ = trained_model_dir(tmp_path)
    assert main(["card", "validate", str(ckpt)]) == 0
    assert main(["card", "show", str(ckpt)]) == 0
    assert "# toy-linear" in capsys.readouterr().out
    out = tmp_path / "card.html"
    assert main(["card", "render", str(ckpt), "--format", "html", "--output", str(out)]) == 0
    assert "Model card: toy-linear" in out.read_text()
    capsys.readouterr()
    assert main(["models", str(tmp_path / "runs"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["name"] == "toy-linear" and rows[0]["valid"] and rows[0]["parameters"] == 4


def test_incomplete_card_fails_validation(tmp_path, capsys):
    ckpt, _ = trained_model_dir(tmp_path, complete=False)
    assert main(["card", "validate", str(ckpt)]) == 3
    assert "capabilities.supported is empty" in capsys.readouterr().out
    assert main(["card", "show", str(tmp_path)]) == 3  # no card.json there
