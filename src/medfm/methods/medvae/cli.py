"""``medfm medvae`` verbs (torch-free declarations; the run functions are imported only when a verb runs)."""

from __future__ import annotations

from medfm.core.commands import Command, Group

_C = "medfm.methods.medvae.config"

GROUP = Group(
    "medvae",
    "MedVAE: 2D/3D medical autoencoders that downsize images into latents (two-stage training).",
    (
        Command("train", "Train stage 1 (autoencoder) or stage 2 (2D projection head / 3D volumetric fine-tuning).",
                f"{_C}:TrainConfig", "medfm.methods.medvae.train:run_train"),
        Command("encode", "Encode images (folder, manifest or phantoms) into latent files (mean latents by default).",
                f"{_C}:EncodeConfig", "medfm.methods.medvae.encode:run_encode"),
        Command("decode", "Decode latent files back to images at their original size.",
                f"{_C}:DecodeConfig", "medfm.methods.medvae.encode:run_decode"),
        Command("evaluate", "PSNR/SSIM/MS-SSIM of reconstructions vs bicubic/trilinear at the latent size.",
                f"{_C}:EvaluateConfig", "medfm.methods.medvae.evaluate:run_evaluate"),
        Command("classify", "Downstream AUROC and training throughput on latents vs full-resolution images.",
                f"{_C}:ClassifyConfig", "medfm.methods.medvae.classify:run_classify"),
        Command("export", "Convert an original medvae checkpoint into a medfm model directory.",
                f"{_C}:ExportConfig", "medfm.methods.medvae.encode:run_export"),
        Command("report", "Re-render report.html of a finished run.", "medfm.core.report:ReportConfig", "medfm.core.report:run_report"),
    ),
)  # fmt: skip
