"""MedVAE at CPU scale (spec C4): fidelity vs bicubic/trilinear, downstream AUROC on latents vs images, throughput.

Run: ``python benchmarks/medvae.py [--quick]`` -> ``benchmarks/results/medvae.json``. Everything is measured side by
side in one run on CXR phantoms (2D) and CT phantoms (3D). Model sizes and steps are tiny (2 CPU cores), so the
absolute fidelity is far below the paper's; the claims compare against baselines measured in the same run.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from medfm.core.bench import Benchmark
from medfm.core.config import from_dict

log = logging.getLogger("benchmarks.medvae")


def train(out: Path, preset: str, source: str, steps: int, extra: dict, init: str | None = None, stage: int = 1):
    from medfm.methods.medvae.config import TrainConfig
    from medfm.methods.medvae.train import run_train

    cfg = {"output_dir": str(out), "seed": 0, "device": "cpu", "stage": stage,
           "model": {"preset": preset, "init": init}, "data": {"source": source, **extra.get("data", {})},
           "loss": {"disc_start": steps * 2 // 3, "disc_channels": 32, "disc_layers": 2, **extra.get("loss", {})},
           "optim": {"steps": steps, "batch_size": extra.get("batch", 8), "lr": 2e-3, "checkpoint_every": steps,
                     "log_every": 10}}  # fmt: skip
    run_train(from_dict(TrainConfig, cfg))
    return out / "checkpoints" / "final", json.loads((out / "results.json").read_text())["metrics"]


def main() -> int:
    bench = Benchmark("medvae", __doc__)
    args = bench.parse()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    q = args.quick
    steps2d, steps3d, n2d, cls_steps = (40, 4, 64, 60) if q else (150, 20, 200, 150)
    size = 32 if q else 64  # --quick: tiny presets on 32x32 images (the shared 2-core machine was overloaded)
    fam = "tiny" if q else "small"
    from medfm.methods.medvae.classify import compare, training_throughput
    from medfm.methods.medvae.config import ClassifierOptions
    from medfm.methods.medvae.data import split_items
    from medfm.methods.medvae.encode import encode_tiled, seam_error
    from medfm.methods.medvae.model import build_model, load_model
    from medfm.methods.medvae.train import data_items

    claims, metrics = [], {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # ---- 2D: train 4_1 and 8_1 shapes on 64x64 CXR phantoms; fidelity vs bicubic ------------------------------
        data2d = {"data": {"n": n2d, "size": size, "val_fraction": 0.3}}
        ckpt, fid = {}, {}
        for shape in ("4_1", "8_1"):
            ckpt[shape], fid[shape] = train(tmp / f"2d_{shape}", f"{fam}_{shape}_2d", "phantom:cxr", steps2d, data2d)
            m = fid[shape]
            metrics[f"2d_{shape}"] = {k: m[k]["value"] for k in m}
            claims.append(bench.claim(f"2d_{shape}_psnr_vs_bicubic", m["psnr_gain_vs_bicubic"]["value"], ci=m["psnr_gain_vs_bicubic"]["ci"], n=m["psnr"]["n"], note=f"{fam}_{shape}_2d, {steps2d} steps, {size}x{size} phantoms; PSNR {m['psnr']['value']:.2f}"
                f" vs bicubic {m['psnr_bicubic']['value']:.2f} dB (data range 1)"))  # fmt: skip
        # ---- 2D stage 2 (projection head vs frozen random-CNN teacher) ----------------------------------------------
        s2, _ = train(
            tmp / "2d_4_1_s2", f"{fam}_4_1_2d", "phantom:cxr", max(10, steps2d // 3), data2d, str(ckpt["4_1"]), 2
        )
        # ---- downstream classification on latents vs images vs bicubic ---------------------------------------------
        from medfm.methods.medvae.config import TrainConfig

        label, cls_size = "Cardiomegaly", 64  # classification always on 64x64 phantoms (also with --quick)
        cfg = from_dict(
            TrainConfig,
            {
                "seed": 1,
                "data": {
                    "source": "phantom:cxr",
                    "n": 400 if not q else 80,
                    "size": cls_size,
                    "label": label,
                    "val_fraction": 0.5,
                },
            },
        )
        items = data_items(cfg, 2)
        opts = ClassifierOptions(steps=cls_steps, batch_size=32, lr=1e-3, width=16)
        model = load_model(str(s2))
        res = compare(split_items(items, "train"), split_items(items, "val"), label, model,
                      ["image", "bicubic", "latent", "projected"], opts, seed=0)  # fmt: skip
        metrics["classify_2d"] = {k: {"auroc": r["auroc"].value, "ci": r["auroc"].ci, "samples_per_s": r["samples_per_s"],
                                      "shape": r["shape"]} for k, r in res.items()}  # fmt: skip
        y = res["image"]["labels"]

        def paired(a: str, b: str):
            from medfm.core.metrics import auroc, with_ci

            return with_ci(lambda yy, s1, s2: auroc(yy, s1) - auroc(yy, s2), y, res[a]["scores"], res[b]["scores"],
                           strata=y)  # fmt: skip

        d_img = paired("latent", "image")
        claims.append(bench.claim("2d_auroc_latent_within_2_points", d_img.value, ci=d_img.ci, n=len(y), note=f"{label} on {cls_size}x{cls_size} CXR phantoms; latent {res['latent']['auroc'].value:.3f}, image "
                            f"{res['image']['auroc'].value:.3f}"))  # fmt: skip
        d_bic = paired("latent", "bicubic")
        claims.append(bench.claim("2d_auroc_latent_above_bicubic", d_bic.value, ci=d_bic.ci, n=len(y), note=f"bicubic {res['bicubic']['auroc'].value:.3f}"))  # fmt: skip
        # ---- 3D: inflate 2D 4_1 stage-1 weights, fine-tune on 32^3 CT patches; fidelity vs trilinear ---------------
        c3, m3 = train(tmp / "3d_4_1", f"{fam}_4_1_3d", "phantom:ct", steps3d,
                       {"data": {"n": 8 if not q else 4, "patch": 32 if not q else 16, "phantom_shape": [40, 40, 40] if not q else [24, 24, 24]},
                        "loss": {"slices_per_axis": 2}, "batch": 2}, str(ckpt["4_1"]), 2)  # fmt: skip
        metrics["3d_4_1"] = {k: m3[k]["value"] for k in m3}
        claims.append(bench.claim("3d_4_1_psnr_vs_trilinear", m3["psnr_gain_vs_trilinear"]["value"], ci=m3["psnr_gain_vs_trilinear"]["ci"], n=m3["psnr"]["n"], note=f"{fam}_4_1_3d, {steps3d} steps from inflated 2D weights"))  # fmt: skip
        # ---- throughput of downstream training on latents vs images, side by side ----------------------------------
        reps = 2 if q else 4
        tp = {
            "2d_image_512": training_throughput((1, 512, 512), 8, reps),
            "2d_latent_4x_128": training_throughput((1, 128, 128), 8, reps),
            "2d_latent_8x_64": training_throughput((1, 64, 64), 8, reps),
            "3d_image_128": training_throughput((1, 128, 128, 128), 2, max(1, reps // 2)),
            "3d_latent_4x_32": training_throughput((1, 32, 32, 32), 2, max(1, reps // 2)),
        }
        metrics["classifier_training_samples_per_s"] = tp
        g2 = tp["2d_latent_4x_128"] / tp["2d_image_512"]
        g3 = tp["3d_latent_4x_32"] / tp["3d_image_128"]
        claims.append(
            bench.claim(
                "2d_throughput_gain_4x", g2, note="SmallCNN, batch 8, CPU 2 threads; 512^2 image vs 128^2 latent"
            )
        )
        claims.append(bench.claim("3d_throughput_gain_4x", g3, note="SmallCNN (3D), batch 2; 128^3 volume vs 32^3 latent"))  # fmt: skip
        # ---- encoding speed and tiling seams -----------------------------------------------------------------------
        m2 = build_model("small_4_1_2d").eval()
        x = torch.rand(4, 1, 512, 512) * 2 - 1
        with torch.no_grad():
            m2.encode(x[:1])
            t0 = time.perf_counter()
            m2.encode(x)
            enc2 = 4 / (time.perf_counter() - t0)
        m3d = load_model(str(c3))
        v = torch.rand(1, 1, 128, 128, 128) * 2 - 1
        with torch.no_grad():
            t0 = time.perf_counter()
            encode_tiled(m3d, v, 64, 0.25)
            enc3 = 1 / (time.perf_counter() - t0)
        vol = torch.from_numpy(split_items(data_items(from_dict(TrainConfig, {"data": {
            "source": "phantom:ct", "n": 1, "phantom_shape": [64, 64, 64], "val_fraction": 0.0}}), 3), "train")[0]
            .array)[None, None]  # fmt: skip
        seams = seam_error(m3d, vol, 32, 0.5)
        metrics["encode"] = {"2d_small_4_1_512px_images_per_s": enc2, "3d_small_4_1_128cube_tiled_volumes_per_s": enc3,
                             "seam_error_64cube_ct_tile32": seams}  # fmt: skip
    metrics["seconds"] = round(time.perf_counter() - t_start, 1)
    bench.write(metrics)
    print(json.dumps([{"id": c.id, "ours": c.ours, "holds": c.holds} for c in claims], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
