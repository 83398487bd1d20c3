"""Rule-based CheXpert labeler on hand-written sentences (negation, uncertainty, conjunctions)."""

from __future__ import annotations

import pytest

from model_export.ssacl.anatomy import CHEXPERT_LABELS
from model_export.ssacl.text.labeler import (
    LabelState,
    aggregate,
    label_report,
    label_sentence,
    positive_vector,
)

P, N, U, B = LabelState.POSITIVE, LabelState.NEGATIVE, LabelState.UNCERTAIN, LabelState.BLANK


def states(sentence: str) -> dict[str, LabelState]:
    """Non-blank labels of a sentence, No Finding excluded."""
    return {k: v for k, v in label_sentence(sentence).items() if v is not B and k != "No Finding"}


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        # standard positive phrasing
        ("There is a small right pleural effusion.", {"Pleural Effusion": P}),
        ("The heart is enlarged.", {"Cardiomegaly": P}),
        ("Moderate cardiomegaly.", {"Cardiomegaly": P}),
        ("Enlarged cardiac silhouette.", {"Cardiomegaly": P}),
        ("Endotracheal tube terminates above the carina.", {"Support Devices": P}),
        ("Tubes and lines are in standard position.", {"Support Devices": P}),
        ("Right internal jugular central venous catheter tip in the SVC.", {"Support Devices": P}),
        ("Left chest wall pacemaker with leads in the right heart.", {"Support Devices": P}),
        ("Median sternotomy wires are intact.", {"Support Devices": P}),
        ("Fractured right 6th rib.", {"Fracture": P}),
        ("Healed left rib fractures.", {"Fracture": P}),
        ("Right apical pleural thickening.", {"Pleural Other": P}),
        ("Blunting of the left costophrenic angle.", {"Pleural Effusion": P}),
        ("Calcified granuloma in the right upper lobe.", {"Lung Lesion": P}),
        ("A 2 cm nodule in the left lower lobe.", {"Lung Lesion": P}),
        ("Left lower lobe collapse.", {"Atelectasis": P}),
        ("Volume loss in the left lung.", {"Atelectasis": P}),
        ("Bibasilar atelectasis.", {"Atelectasis": P}),
        ("Pulmonary vascular congestion.", {"Edema": P}),
        ("Moderate pulmonary edema.", {"Edema": P}),
        ("Large right pneumothorax.", {"Pneumothorax": P}),
        ("Consolidation in the right lower lobe.", {"Consolidation": P}),
        ("Patchy airspace opacity at the left base.", {"Lung Opacity": P}),
        ("Hazy bilateral infiltrates.", {"Lung Opacity": P}),
        ("Right lower lobe pneumonia.", {"Pneumonia": P}),
        ("Widened mediastinum.", {"Enlarged Cardiomediastinum": P}),
        ("Mediastinal widening.", {"Enlarged Cardiomediastinum": P}),
        # negation, including conjunction scope
        ("No pleural effusion or pneumothorax.", {"Pleural Effusion": N, "Pneumothorax": N}),
        (
            "No focal consolidation, pleural effusion, or pneumothorax.",
            {"Consolidation": N, "Pleural Effusion": N, "Pneumothorax": N},
        ),
        ("Heart size is normal.", {"Cardiomegaly": N}),
        ("Normal heart size.", {"Cardiomegaly": N}),
        ("The heart is not enlarged.", {"Cardiomegaly": N}),
        ("Without evidence of pneumonia.", {"Pneumonia": N}),
        ("Negative for fracture.", {"Fracture": N}),
        ("The lungs are free of consolidation.", {"Consolidation": N}),
        ("Pneumothorax is not seen.", {"Pneumothorax": N}),
        ("The previously seen effusion has resolved.", {"Pleural Effusion": N}),
        ("No evidence of pulmonary edema.", {"Edema": N}),
        ("The lungs are clear.", {"Lung Opacity": N}),
        ("The mediastinal contours are normal.", {"Enlarged Cardiomediastinum": N}),
        ("Costophrenic angles are sharp.", {"Pleural Effusion": N}),
        # scope ends at "but" / "however" / ", there is"
        ("Mild cardiomegaly, but no effusion.", {"Cardiomegaly": P, "Pleural Effusion": N}),
        (
            "No effusion; however there is a small pneumothorax.",
            {"Pleural Effusion": N, "Pneumothorax": P},
        ),
        ("No pneumothorax, there is a right effusion.", {"Pneumothorax": N, "Pleural Effusion": P}),
        (
            "No effusion, possible right basilar atelectasis.",
            {"Pleural Effusion": N, "Atelectasis": U},
        ),
        # uncertainty
        ("Possible right lower lobe pneumonia.", {"Pneumonia": U}),
        ("Pneumonia cannot be excluded.", {"Pneumonia": U}),
        ("Findings may represent early edema.", {"Edema": U}),
        ("Likely atelectasis.", {"Atelectasis": U}),
        ("Opacity concerning for pneumonia.", {"Lung Opacity": P, "Pneumonia": U}),
        ("Questionable small left effusion.", {"Pleural Effusion": U}),
        ("Findings suggest a small pneumothorax.", {"Pneumothorax": U}),
        ("Atelectasis versus consolidation.", {"Atelectasis": U, "Consolidation": U}),
        ("Borderline cardiomegaly.", {"Cardiomegaly": U}),
        ("Opacity which may represent atelectasis.", {"Lung Opacity": P, "Atelectasis": U}),
        # things that look like mentions but are not
        ("Small pericardial effusion.", {}),
        ("Residuals of prior granulomatous infection.", {"Lung Lesion": P}),
        ("Comparison XXXX.", {}),
        # "plate-like" is a shape, not a plate, however the detokeniser spaced it
        ("There is plate - like atelectasis.", {"Atelectasis": P}),
        ("There is plate like atelectasis.", {"Atelectasis": P}),
        ("Orthopedic plate in the left humerus.", {"Support Devices": P}),
    ],
)
def test_sentence_states(sentence: str, expected: dict[str, LabelState]) -> None:
    assert states(sentence) == expected


def test_codes_match_chexpert() -> None:
    assert [s.code for s in (P, N, U, B)] == [1, 0, -1, None]
    assert P.rank > U.rank > N.rank > B.rank


def test_sentence_no_finding_needs_an_explicit_normal_statement() -> None:
    assert label_sentence("No acute cardiopulmonary abnormality.")["No Finding"] is P
    assert label_sentence("The heart is normal in size.")["No Finding"] is B
    assert label_sentence("No acute disease, but small effusion.")["No Finding"] is B


def test_report_aggregation_positive_beats_uncertain_beats_negative() -> None:
    labels = label_report(
        "No pleural effusion. Possible small left effusion. Possible pneumonia. "
        "Right lower lobe pneumonia. No pneumothorax."
    )
    assert labels["Pleural Effusion"] is U
    assert labels["Pneumonia"] is P
    assert labels["Pneumothorax"] is N
    assert labels["Cardiomegaly"] is B
    assert labels["No Finding"] is B


def test_no_finding_ignores_support_devices_only() -> None:
    assert label_report("Endotracheal tube in place. Lungs are clear.")["No Finding"] is P
    assert label_report("Heart size normal. Possible small effusion.")["No Finding"] is B
    assert label_report("")["No Finding"] is B
    assert aggregate([])["No Finding"] is B


def test_positive_vector_counts_positive_only() -> None:
    vec = positive_vector("The heart is enlarged. Possible pneumonia. No pneumothorax.")
    assert len(vec) == 14 and set(vec) <= {0, 1}
    on = [CHEXPERT_LABELS[i] for i, v in enumerate(vec) if v]
    assert on == ["Cardiomegaly"]
    normal = positive_vector("No acute cardiopulmonary abnormality.")
    assert normal == [1] + [0] * 13
