"""Skeletons of the pose datasets and the protocols their numbers are reported under.

A ``Skeleton`` is what a pose dataset, its data module and the pose module must agree on: the joint
order (the heatmap channel order), left/right pairs for flipping, the part columns of the paper
tables, and the joints a protocol leaves out or normalises by. A ``PoseProtocol`` names the metric.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Skeleton", "MPII_SKELETON", "LSP_SKELETON", "FLIC_SKELETON", "COCO_SKELETON",
    "PoseProtocol", "PCKH_MPII", "PCK_TORSO",
]


@dataclass(frozen=True)
class Skeleton:
    """The joints of a dataset and how its protocol reads them.

    Attributes:
        name: dataset family, for messages.
        joints: joint names in the dataset's order (the heatmap channel order).
        flip_pairs: (left, right) index pairs swapped by a horizontal flip.
        parts: reported part columns, each the joints it averages (e.g. "Elbow": (11, 14)).
        excluded: joints left out of the total (pelvis and thorax in MPII's PCKh).
        limbs: the joints of the stacking ablation's metric (wrists, elbows, knees, ankles).
        torso: (shoulder, opposite hip) pair whose distance normalises PCK (FLIC, LSP); ``None``
            when the dataset has no torso normaliser.
        edges: joint pairs drawn in visualisations.
    """

    name: str
    joints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    parts: dict[str, tuple[int, ...]] = field(default_factory=dict)
    excluded: tuple[int, ...] = ()
    limbs: tuple[int, ...] = ()
    torso: tuple[int, int] | None = None
    edges: tuple[tuple[int, int], ...] = ()

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def flip_permutation(self) -> list[int]:
        """Index map such that ``flipped[:, perm]`` relabels left as right and right as left."""
        perm = list(range(self.num_joints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm


MPII_SKELETON = Skeleton(
    name="mpii",
    joints=(
        "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
        "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    parts={
        "Head": (9,), "Shoulder": (12, 13), "Elbow": (11, 14), "Wrist": (10, 15),
        "Hip": (2, 3), "Knee": (1, 4), "Ankle": (0, 5),
    },
    excluded=(6, 7),
    limbs=(10, 15, 11, 14, 1, 4, 0, 5),
    torso=(13, 2),
    edges=((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
           (10, 11), (11, 12), (12, 7), (7, 13), (13, 14), (14, 15)),
)

# LSP / LSP-extended joints.mat order (14 joints, person-centric left/right).
LSP_SKELETON = Skeleton(
    name="lsp",
    joints=(
        "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "r_wrist", "r_elbow",
        "r_shoulder", "l_shoulder", "l_elbow", "l_wrist", "neck", "head_top",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9)),
    parts={
        "Head": (13,), "Shoulder": (8, 9), "Elbow": (7, 10), "Wrist": (6, 11),
        "Hip": (2, 3), "Knee": (1, 4), "Ankle": (0, 5),
    },
    limbs=(6, 11, 7, 10, 1, 4, 0, 5),
    # PCK on LSP is normalised by the torso: left shoulder to right hip (Yang & Ramanan's PCP/PCK).
    torso=(9, 2),
    edges=((0, 1), (1, 2), (3, 4), (4, 5), (2, 3), (6, 7), (7, 8), (9, 10), (10, 11),
           (8, 9), (8, 2), (9, 3), (12, 13), (8, 12), (9, 12)),
)

# FLIC's 11 annotated upper-body joints, taken from the 29 columns of examples.mat's `coords`.
FLIC_SKELETON = Skeleton(
    name="flic",
    joints=(
        "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
        "l_hip", "r_hip", "l_eye", "r_eye", "nose",
    ),
    flip_pairs=((0, 3), (1, 4), (2, 5), (6, 7), (8, 9)),
    parts={"Shoulder": (0, 3), "Elbow": (1, 4), "Wrist": (2, 5), "Hip": (6, 7), "Head": (8, 9, 10)},
    limbs=(1, 4, 2, 5),
    # FLIC's observer-centric PCK normalises by the torso: left shoulder to right hip.
    torso=(0, 7),
    edges=((0, 1), (1, 2), (3, 4), (4, 5), (0, 3), (0, 6), (3, 7), (6, 7), (8, 10), (9, 10)),
)

COCO_SKELETON = Skeleton(
    name="coco",
    joints=(
        "nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
        "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    parts={
        "Head": (0, 1, 2, 3, 4), "Shoulder": (5, 6), "Elbow": (7, 8), "Wrist": (9, 10),
        "Hip": (11, 12), "Knee": (13, 14), "Ankle": (15, 16),
    },
    limbs=(7, 8, 9, 10, 13, 14, 15, 16),
    torso=(5, 12),
    edges=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
           (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)),
)


@dataclass(frozen=True)
class PoseProtocol:
    """The evaluation protocol a source is reported under.

    ``name`` is the metric key (``val/<name>``), ``threshold`` the fraction of the normaliser, and
    ``normaliser`` the target field that holds it (``head_size`` or ``torso_size``).
    """

    name: str
    threshold: float
    normaliser: str
    description: str


PCKH_MPII = PoseProtocol("pckh", 0.5, "head_size", "PCKh@0.5 (MPII protocol: 0.6 x head-box diagonal)")
PCK_TORSO = PoseProtocol("pck", 0.2, "torso_size", "PCK@0.2 normalised by torso size")
