"""MeSH tag -> CheXpert label and location mapping."""

from __future__ import annotations

import pytest

from model_export.data.iu_mesh import mesh_labels, mesh_locations, mesh_normal, mesh_tag_labels
from model_export.ssacl import anatomy


@pytest.mark.parametrize(
    ("tag", "labels"),
    [
        ("Cardiomegaly/mild", ("Cardiomegaly",)),
        ("Cardiac Shadow/enlarged", ("Cardiomegaly",)),
        ("Cardiac Shadow/obscured", ()),
        ("Opacity/lung/base/left", ("Lung Opacity",)),
        ("Opacity/lung/upper lobe/right/round", ("Lung Opacity", "Lung Lesion")),
        ("Calcified Granuloma/lung/upper lobe/left", ("Lung Lesion",)),
        ("Pulmonary Congestion/mild", ("Edema",)),
        ("Costophrenic Angle/bilateral/blunted", ("Pleural Effusion",)),
        ("Cicatrix/lung/apex/bilateral", ("Lung Opacity",)),
        ("Cicatrix/pleura/apex/bilateral", ("Pleural Other",)),
        ("Cicatrix/breast/right", ()),
        ("Mediastinum/prominent", ("Enlarged Cardiomediastinum",)),
        ("Mediastinum/lymph nodes/enlarged", ()),
        ("Mass/breast/large", ()),
        ("Hydropneumothorax/right", ("Pneumothorax", "Pleural Effusion")),
        ("Catheters, Indwelling/right", ("Support Devices",)),
        ("Fractures, Bone/ribs/left/healed", ("Fracture",)),
        ("Calcinosis/aorta", ()),
        ("normal", ()),
        ("", ()),
    ],
)
def test_tag_labels(tag: str, labels: tuple[str, ...]) -> None:
    assert mesh_tag_labels(tag) == labels


def test_study_vector_and_no_finding_rule() -> None:
    vec = mesh_labels(["Cardiomegaly/mild", "Calcinosis/aorta"])
    assert vec["Cardiomegaly"] == 1 and vec["No Finding"] == 0
    assert sum(vec.values()) == 1
    devices_only = mesh_labels(["Catheters, Indwelling/right", "Emphysema"])
    assert devices_only["No Finding"] == 1 and devices_only["Support Devices"] == 1
    assert mesh_normal(["normal"]) and not mesh_normal(["Emphysema"])


def ids(*names: str) -> tuple[int, ...]:
    return tuple(anatomy.node_id(n) for n in names)


def test_locations() -> None:
    (loc,) = mesh_locations("Opacity/lung/base/left/mild")
    assert loc.label == "Lung Opacity" and loc.groups == (ids("left lower lung zone"),)
    (loc,) = mesh_locations("Pulmonary Atelectasis/base/bilateral")
    assert loc.groups == (ids("right lower lung zone"), ids("left lower lung zone"))
    (loc,) = mesh_locations("Opacity/lung/base")
    assert loc.groups == (ids("right lower lung zone", "left lower lung zone"),)
    assert mesh_locations("Opacity/lung/lingula")[0].groups == (ids("left mid lung zone"),)
    assert mesh_locations("Opacity/lung/middle lobe")[0].groups == (ids("right mid lung zone"),)
    assert mesh_locations("Pleural Effusion/right")[0].groups == (ids("right lung"),)
    assert mesh_locations("Pleural Effusion/small") == ()
    assert mesh_locations("Calcinosis/lung/base/left") == ()
