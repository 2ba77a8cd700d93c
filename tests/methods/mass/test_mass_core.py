"""MASS algorithmic core against hand-computed values: losses, model structure, proposals, sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfm.methods.mass.losses import adaptive_dice_loss, bce_loss, nt_xent
from medfm.methods.mass.model import IrisNet, count_parameters_by_part
from medfm.methods.mass.proposals import hierarchical_merge, iou_nms, proposal_quality, propose_masks, to_index_sets
from medfm.methods.mass.sampling import overlapping_starts


def test_adaptive_dice_hand_computed():
    # P = sigmoid(0) = 0.5 everywhere on 4 voxels, y = [1, 1, 0, 0]
    logits = torch.zeros(1, 1, 1, 2, 2)
    y = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 1, 2, 2)
    tp, fp, fn = 1.0, 1.0, 1.0  # 0.5+0.5, 0.5+0.5, 0.5+0.5
    alpha = min(max(fp / (fp + fn + 1e-6), 0.2), 0.8)
    expect = 1 - tp / (tp + alpha * fp + (1 - alpha) * fn + 1e-6)
    assert adaptive_dice_loss(logits, y).item() == pytest.approx(expect, abs=1e-6)
    # alpha clamps to 0.8 when there are no false negatives: y all ones except FP mass only
    logits2 = torch.tensor([10.0, 10.0, 0.0, 0.0]).reshape(1, 1, 1, 2, 2)
    y2 = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 1, 2, 2)
    p = torch.sigmoid(torch.tensor(10.0)).item()
    tp2, fp2, fn2 = 2 * p, 1.0, 2 * (1 - p)
    a2 = min(max(fp2 / (fp2 + fn2 + 1e-6), 0.2), 0.8)
    assert a2 == 0.8
    assert adaptive_dice_loss(logits2, y2).item() == pytest.approx(1 - tp2 / (tp2 + a2 * fp2 + (1 - a2) * fn2), 1e-5)
    # empty target, confident empty prediction: Dice term is (near) 1, BCE near 0
    empty = torch.zeros(1, 1, 1, 2, 2)
    assert adaptive_dice_loss(torch.full_like(empty, -20.0), empty).item() == pytest.approx(1.0, abs=1e-3)
    assert bce_loss(torch.full_like(empty, -20.0), empty).item() < 1e-6


def test_nt_xent_prefers_matching_views():
    z = torch.eye(4)
    good = nt_xent(z, z, temperature=0.1).item()
    bad = nt_xent(z, z.roll(1, 0), temperature=0.1).item()
    assert good < 0.01 < bad


def test_paper_preset_parameter_count_within_2_percent():
    with torch.device("meta"):
        model = IrisNet()  # spec A2 defaults: channels 32..512, 2 blocks, 3 prior stages, pos 128
    parts = count_parameters_by_part(model)
    assert abs(parts["total"] - 120.13e6) / 120.13e6 < 0.02
    assert abs(parts["encoder"] - 37.66e6) / 37.66e6 < 0.02
    assert abs(parts["fusion"] - 24.85e6) / 24.85e6 < 0.02


def _tiny():
    torch.manual_seed(0)
    return IrisNet(channels=[4, 8, 16], blocks=1, num_prior_stage=2, pos_size=16).eval()


def test_output_shape_and_task_permutation_equivariance():
    m = _tiny()
    x, ref = torch.randn(1, 1, 16, 16, 16), torch.randn(1, 1, 16, 16, 16)
    masks = (torch.rand(1, 3, 16, 16, 16) > 0.6).float()
    with torch.no_grad():
        out = m(x, ref, masks)
        perm = torch.tensor([2, 0, 1])
        out_p = m(x, ref, masks[:, perm])
        assert out.shape == (1, 3, 16, 16, 16)
        assert torch.allclose(out[:, perm], out_p, atol=1e-4)
        assert m(x, ref, masks[:, :1]).shape == (1, 1, 16, 16, 16)
        tokens = m.encode_tasks(ref, torch.zeros(1, 1, 16, 16, 16))
        assert all(torch.isfinite(t).all() for t in tokens)
        assert tokens[0].shape == (1, 1, 11, 16)


def test_foreground_token_is_masked_mean():
    m = _tiny()
    enc = m.task_encoders[0]  # deepest level: scale 4, 16 channels, 4^3 feature map
    feat = torch.arange(64, dtype=torch.float32).reshape(1, 1, 4, 4, 4).repeat(1, 16, 1, 1, 1)
    mask = torch.zeros(1, 1, 16, 16, 16)
    mask[..., :4, :4, :4] = 1  # exactly feature cell (0, 0, 0) -> value 0
    mask[..., 12:16, 12:16, 12:16] = 1  # cell (3, 3, 3) -> value 63
    tok = enc.foreground_token(feat, mask)
    assert torch.allclose(tok, torch.full((1, 1, 16), 31.5))


def test_pixelshuffle_roundtrip():
    from monai.networks.utils import pixelshuffle, pixelunshuffle

    x = torch.randn(2, 8, 3, 3, 3)
    assert torch.equal(pixelunshuffle(pixelshuffle(x, 3, 2), 3, 2), x)


def test_nms_keeps_largest_and_drops_near_duplicates():
    size = 1000
    big = np.arange(0, 100)
    dup = np.arange(0, 99)  # IoU 0.99 with big
    other = np.arange(200, 260)
    half = np.arange(0, 50)  # IoU 0.5 with big
    assert iou_nms([dup, other, big, half], size, 0.95) == [2, 1, 3]


def test_index_sets_and_merge():
    lab = np.array([[[1, 1, 2, 0], [3, 3, 2, 0]]])
    sets = to_index_sets(lab)
    assert [s.tolist() for s in sets] == [[0, 1], [2, 6], [4, 5]]
    img = np.array([[[0.0, 0.0, 0.05, 0], [1.0, 1.0, 0.05, 0]]])
    merged = hierarchical_merge(lab, img, [0.1, 2.0])
    assert len(np.unique(merged[0][lab > 0])) == 2  # 1 and 2 merge (diff 0.05), 3 stays
    assert len(np.unique(merged[1][lab > 0])) == 1


def test_proposals_recover_planted_objects():
    from medfm.methods.mass.config import ProposalOptions

    raw = np.full((24, 24, 24), -1000.0)
    raw[2:22, 2:22, 2:22] = 40  # body, soft tissue
    raw[4:10, 4:10, 4:10] = 200  # enhancing cube
    raw[12:20, 12:20, 12:20] = 600  # bone cube
    rng = np.random.default_rng(0)
    raw += rng.normal(0, 5, raw.shape)
    image = (raw - raw.mean()) / raw.std()
    opts = ProposalOptions(slic_segments=40, min_voxels=10)
    masks, sources, body = propose_masks(raw, image, (1.0, 1.0, 1.0), opts)
    assert body.sum() == 20**3
    label = np.zeros(raw.shape, np.int16)
    label[4:10, 4:10, 4:10] = 1
    label[12:20, 12:20, 12:20] = 2
    q = proposal_quality(masks, label, {1: "enhancing", 2: "bone"})
    assert q["enhancing"]["best_dice"] > 0.95 and q["bone"]["best_dice"] > 0.95
    assert {"slic", "threshold"} <= set(sources)
    assert all(len(m) <= opts.max_fraction * body.sum() for m in masks)


def test_two_views_overlap_at_least_two_thirds():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = overlapping_starts((50, 40, 60), (30, 30, 30), 0.67, rng)
        overlap = 30 - np.abs(a - b)
        assert (overlap >= int(0.67 * 30)).all()
        assert (a >= 0).all() and (a + 30 <= np.array([50, 40, 60])).all()
        assert (b >= 0).all() and (b + 30 <= np.array([50, 40, 60])).all()


def test_mass_losses_hand_computed():
    import math

    import torch

    from medfm.methods.mass.losses import adaptive_dice_loss, bce_loss, mass_loss, nt_xent

    p = [0.9, 0.6, 0.3, 0.2]
    y = [1.0, 0.0, 1.0, 1.0]
    logits = torch.tensor([math.log(v / (1 - v)) for v in p]).view(1, 1, 1, 2, 2).repeat(2, 1, 1, 1, 1)
    target = torch.tensor(y).view(1, 1, 1, 2, 2).repeat(2, 1, 1, 1, 1)
    tp = sum(a * b for a, b in zip(p, y))  # 1.4
    fp = sum(a * (1 - b) for a, b in zip(p, y))  # 0.6
    fn = sum((1 - a) * b for a, b in zip(p, y))  # 1.6
    alpha = min(max(fp / (fp + fn), 0.2), 0.8)  # 0.2727: inside the clamp, and not 1/2
    dice_loss = 1 - tp / (tp + alpha * fp + (1 - alpha) * fn)
    bce = -sum(b * math.log(a) + (1 - b) * math.log(1 - a) for a, b in zip(p, y)) / 4
    d = adaptive_dice_loss(logits, target)
    assert d.shape == (2, 1) and torch.allclose(d, torch.full((2, 1), dice_loss), atol=1e-5)
    b = bce_loss(logits, target)
    assert b.shape == (2, 1) and torch.allclose(b, torch.full((2, 1), bce), atol=1e-5)
    assert float(mass_loss(logits, target, dice_weight=2.0, bce_weight=0.5)) == pytest.approx(
        2.0 * dice_loss + 0.5 * bce, abs=1e-5
    )
    # alpha clamps at 0.8 when almost everything predicted is a false positive
    many_fp = torch.tensor([math.log(v / (1 - v)) for v in (0.99, 0.99, 0.99, 0.5)]).view(1, 1, 1, 2, 2)
    only_last = torch.tensor([0.0, 0.0, 0.0, 1.0]).view(1, 1, 1, 2, 2)
    tp, fp, fn = 0.5, 2.97, 0.5  # FP / (FP + FN) = 0.856 -> 0.8
    assert float(adaptive_dice_loss(many_fp, only_last)) == pytest.approx(1 - tp / (tp + 0.8 * fp + 0.2 * fn), abs=1e-5)
    # NT-Xent with identical views: each row's positive is its twin, the two other rows are at similarity 0
    z = torch.eye(2)
    t = 0.5
    assert float(nt_xent(z, z.clone(), t)) == pytest.approx(math.log(2 + math.exp(1 / t)) - 1 / t, abs=1e-5)


def test_datalist_with_a_dicom_series_folder_reads_like_nifti(tmp_path):
    """Datalists may list DICOM series folders wherever they list NIfTI files (issue 28)."""
    import json

    from tests.data.test_io import make_series

    from medfm.data import io
    from medfm.methods.mass.config import DataOptions
    from medfm.methods.mass.data import load_cases

    series = make_series(tmp_path / "case1")
    (series / "README.txt").write_text("export notes")  # a stray file is skipped, not fatal
    vol = io.load_dicom_series(series)
    io.save_nifti(tmp_path / "case2.nii.gz", vol.array, vol.spacing, vol.affine)
    (tmp_path / "dl.json").write_text(json.dumps({"training": [{"image": "case1"}, {"image": "case2.nii.gz"}]}))
    cases = load_cases(DataOptions(datalist=str(tmp_path / "dl.json"), min_size=8))
    assert len(cases) == 2
    np.testing.assert_array_equal(cases[0].image, cases[1].image)


def _case(label: np.ndarray):
    from medfm.methods.mass.data import Case

    img = np.arange(label.size, dtype=np.float32).reshape(label.shape)
    return Case(id="c", image=img, raw=img, spacing=(1.0, 1.0, 1.0), label=label, labels={1: "s"}, meta={})


def test_reference_crop_is_centred_on_the_median_foreground_voxel():
    from medfm.methods.mass.incontext import median_foreground_voxel, reference_crop

    label = np.zeros((32, 32, 32), np.int16)
    label[0:21, 16, 16] = 1  # a line along x from 0 to 20: the middle voxel is x = 10 (the first is x = 0)
    assert median_foreground_voxel(label == 1).tolist() == [10, 16, 16]
    img, mask = reference_crop(_case(label), 1, 8)
    assert img.shape == (1, 1, 8, 8, 8)
    # the window is x 6..13 (centre 10): its first image value is the volume's value at (6, 12, 12)
    assert float(img[0, 0, 0, 0, 0]) == float(np.ravel_multi_index((6, 12, 12), label.shape))
    assert int(mask.sum()) == 8


def test_class_tokens_average_over_the_references_that_hold_the_structure():
    import torch

    from medfm.methods.mass.incontext import class_tokens

    class Stub(torch.nn.Module):
        """Task tokens = the prompt mask's voxel count, so the mean over references is known."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def encode_tasks(self, image, mask):
            return [torch.full((1, 1, 2, 3), float(mask.sum()))]

    small, large, absent = (np.zeros((16, 16, 16), np.int16) for _ in range(3))
    small[4:6, 4:6, 4:6] = 1  # 8 voxels
    large[2:6, 2:6, 2:6] = 1  # 64 voxels, inside the 8-voxel crop
    toks = class_tokens(Stub(), [_case(small), _case(large), _case(absent)], {"s": 1}, crop=8)
    assert len(toks) == 1 and toks[0].shape == (1, 1, 2, 3)
    assert torch.allclose(toks[0], torch.full((1, 1, 2, 3), (8 + 64) / 2))  # mean of the 2 holding it, not sum
