"""Phrase tables of the rule-based CheXpert labeler (regular expressions on lower-case text).

Written for this project in the spirit of the CheXpert / NegBio labeler (Irvin et al., AAAI
2019): mention phrases per observation, phrases that look like mentions but are not
("unmentions"), negation and uncertainty cues, and attribute rules ("heart size is normal",
"enlarged cardiac silhouette"). Deliberate differences from CheXpert: granulomas count as
Lung Lesion, volume loss as Atelectasis, blunted costophrenic angles as Pleural Effusion,
surgical clips and sternotomy wires as Support Devices.
"""

from __future__ import annotations

#: Observation -> mention patterns. A mention's state comes from the negation/uncertainty cues
#: around it (see labeler.py).
MENTIONS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"widen(?:ed|ing) (?:of (?:the )?)?(?:superior |upper )?mediastin\w*",
        r"mediastinal (?:widening|enlargement|prominence)",
        r"enlarge\w* (?:of )?(?:the )?(?:cardio)?mediastin\w*(?: silhouette| contours?)?",
        r"prominence of (?:the )?(?:superior |upper )?mediastin\w*",
    ),
    "Cardiomegaly": (
        r"cardiomegal\w*",
        r"cardiac (?:enlargement|hypertrophy)",
        r"(?:enlarged|large|big) (?:\w+ )?(?:heart|cardiac (?:silhouette|shadow|contour|size))",
        r"enlargement of (?:the )?(?:heart|cardiac (?:silhouette|shadow|contour))",
    ),
    "Lung Opacity": (
        r"opaci\w*",
        r"infiltrat\w*",
        r"air[- ]?space (?:disease|process|opaci\w*|filling)",
        r"(?:increased|patchy|hazy|streaky|air[- ]?space|parenchymal|pulmonary|lung|confluent|"
        r"ill-defined|nodular|retrocardiac|linear|basilar|alveolar) densit(?:y|ies)",
        r"(?:lobe|lungs?|bases?|basilar|bibasilar|hilar|perihilar|suprahilar|infrahilar|apical|"
        r"midlung|lingular|retrocardiac) (?:\w+ ){0,2}densit(?:y|ies)",
        r"densit(?:y|ies),? (?:is |are )?(?:seen |noted |present )?(?:in|within|at|of|involving|) ?"
        r"(?:the )?(?:(?:right|left|both|bilateral) )?(?:lungs?|lobes?|lower|upper|mid|middle|"
        r"bases?|basilar|lingula|apex|apices|midlung|hil\w+|perihilar|retrocardiac)",
        r"haz(?:y|iness|e)",
        r"interstitial (?:lung )?(?:marking|pattern|prominence|opaci|thickening|disease|densit|"
        r"process|change|infiltrat|fibrosis|abnormalit)\w*",
        r"(?:prominent|increased|prominence of the|prominence of) (?:pulmonary )?interstiti\w*",
        r"interstitium (?:is |are )?(?:\w+ )?(?:prominent|increased|coarse\w*)",
        r"reticul(?:ar|ation|onodular)\w*",
        r"(?<!pleural )(?<!pleural and )(?<!pleural-)(?<!pleuro-)(?<!pleuro)scar\w*",
        r"fibrotic (?:changes?|scar\w*|opaci\w*|bands?|strands?)",
        r"peribronchial (?:thickening|cuffing)",
        r"bronchial wall thickening",
    ),
    "Lung Lesion": (
        r"(?<!soft tissue )mass(?:es)?\b(?! effect)",
        r"nodul\w*",
        r"lumps?\b",
        r"cavit(?:ary|ation|ating)\b",
        r"(?<!thoracic )(?<!pleural )(?<!abdominal )(?<!peritoneal )cavit(?:y|ies)",
        r"carcinoma|neoplasm\w*|tumou?rs?\b",
        r"granulom\w*",
        r"(?:lung|pulmonary|parenchymal|spiculated|cavitary) lesions?",
    ),
    "Edema": (
        r"(?<!soft tissue )(?<!subcutaneous )edema\w*",
        r"heart failure|\bchf\b",
        r"congest(?:ion|ive|ed)\w*",
        r"vascular (?:prominence|engorgement|redistribution)",
        r"cephalization",
        r"kerley",
        r"indistinct\w* (?:of )?(?:the )?(?:\w+ )?vascula\w*|vascular indistinct\w*",
        r"fluid overload",
    ),
    "Consolidation": (r"consolidat\w*",),
    "Pneumonia": (
        r"(?:broncho)?pneumonia\w*",
        r"pneumonitis",
        r"infecti(?:on|ous)\w*",
        r"infected",
    ),
    "Atelectasis": (
        r"atelecta\w*",
        r"(?<!vertebral )(?<!body )(?<!compression )collaps(?:e|ed)\b"
        r"(?! of (?:the )?(?:\w+ )?vertebra)",
        r"volume loss|loss of (?:lung )?volume",
    ),
    "Pneumothorax": (r"(?:hydro|hemo|haemo)?pneumothora\w*", r"\bptx\b"),
    "Pleural Effusion": (
        r"(?<!pericardial )effusions?",
        r"pleural fluid",
        r"hemothorax|hydropneumothora\w*",
        # "blunting of the right costophrenic angle", "costophrenic angles are blunted"
        r"blunt\w* (?:of )?(?:the )?(?:\w+ ){0,3}(?:costophrenic|cp|phrenic|sulc[iu]s?|recess\w*)",
        r"(?:costophrenic|cp) (?:\w+ ){0,3}blunt\w*",
        r"layering fluid",
    ),
    "Pleural Other": (
        r"pleural (?:and parenchymal |or parenchymal |)(?:thicken\w*|scar\w*|plaque\w*|"
        r"calcificat\w*|fibrosis|reaction)",
        r"thicken\w* of (?:the )?(?:\w+ )?pleura",
        r"thickened (?:\w+ )?pleura",
        r"pleuro-?parenchymal|pleural-parenchymal",
        r"(?:apical )?pleural caps?|apical capp\w*|apical caps?\b",
        r"(?:bi)?apical (?:\w+ )?thickening",
        r"fibrothorax",
    ),
    "Fracture": (r"fractur\w*", r"\bfx\b"),
    "Support Devices": (
        r"(?:endotracheal|tracheostomy|nasogastric|orogastric|gastrostomy|feeding|enteric|"
        r"chest|et|ng|og|dobhoff|drainage|thoracostomy|g|j)[- ]tubes?",
        r"\btubes?\b(?! ?like)",
        r"\b(?:ett|ngt|ogt)\b",
        r"catheter\w*",
        r"\bpicc\b",
        r"(?:central|venous|picc|subclavian|jugular|ij|arterial|dialysis|port|"
        r"swan[- ]ganz|catheter|midline) lines?\b",
        r"\blines? and tubes|\btubes and lines",
        r"pacemaker\w*|\bpacer\b|pacing (?:device|wires?|leads?|generator)",
        r"\b(?:a?icd|defibrillator\w*)\b",
        r"(?:pacer|pacemaker|pacing|cardiac|ekg|ecg|monitor\w*|electrode) leads?\b",
        r"\b(?:generator|electrodes?)\b",
        r"stents?\b",
        r"\b(?:port-?a-?cath|portacath|mediport|power ?port|infusion port|port)\b",
        r"(?:sternotomy|sternal|surgical|cerclage|guide|pacing|pacer) ?wires?",
        r"(?:surgical |vascular |cholecystectomy |metallic )?clips?\b",
        r"\bhardware\b|\bscrews?\b|(?<!plate-like )\bplates?\b(?!\s*-?\s*like)",
        r"valve (?:replacement|prosthes\w*)|(?:prosthetic|mechanical|artificial|replaced|"
        r"bioprosthetic) (?:\w+ )?valve|\b(?:tavr|avr|mvr)\b",
        r"devices?\b|apparatus|cannula|\bcoils?\b|\bshunt\b|staples|ivc filter|drains?\b",
        r"prosthes[ie]s|arthroplast\w*|\bsutures?\b|stimulator|internal fixation",
        # a catheter tip named by its position (IU de-identification often hides the device)
        r"tips? (?:\w+ ){0,5}(?:svc|superior vena cava|atri(?:um|al)|cavoatrial|caval|carina|"
        r"brachiocephalic|ventricle|stomach)",
    ),
}

#: Text that contains a mention but is not one (matched first; mentions inside are dropped).
UNMENTIONS: dict[str, tuple[str, ...]] = {
    "Support Devices": (r"\bdrains? (?:into|to)\b", r"tube ?like", r"eustachian tube"),
    "Fracture": (
        r"(?:screw|catheter|lead|wire|hardware|fixation|plate|rod)s? (?:\w+ ){0,3}fractur\w*",
        r"fractur\w* (?:of )?(?:the )?(?:\w+ ){0,3}"
        r"(?:screw|catheter|lead|wire|hardware|plate|rod)s?\b",
    ),
    "Lung Opacity": (r"pleural(?:[- ]\w+)?(?: thickening)?(?: or | and |/| )scar\w*",),
    "Pleural Effusion": (r"pericardial effusion",),
    "Pneumonia": (
        r"granulomatous (?:infection|disease|process)",
        r"(?:prior|previous|old|remote|healed|past|sequela\w* of|residua\w* of) (?:\w+ )?"
        r"(?:infection|infectious|pneumonia)",
        r"tubercul\w* (?:infection|pneumonia)",
    ),
}

NEVER = r"(?!x)x"  # a pattern that matches nothing: attribute rules with only one polarity

#: Attribute rules: (observation, anatomy phrase, positive predicates, negative predicates).
#: The nearest predicate within the clause (after the anatomy, or at most 3 words before it)
#: decides; a negation cue before a positive predicate ("not enlarged") makes it negative.
ATTRIBUTES: tuple[tuple[str, str, str, str], ...] = (
    (
        "Cardiomegaly",
        r"(?:the )?heart(?: size| shadow| silhouette)?|"
        r"cardiac (?:size|silhouette|shadow|contours?)",
        r"enlarg\w*|large|increas\w*|prominent|cardiomegaly|borderline",
        r"normal\w*|unremarkable|within normal limits|(?:is|are) not enlarged|small",
    ),
    (
        "Enlarged Cardiomediastinum",
        r"(?:cardio)?mediastin(?:um|al)(?: silhouette| contours?| width| shadow)?",
        r"enlarg\w*|widen\w*|wide|prominen\w*|increased",
        r"normal\w*|unremarkable|within normal limits",
    ),
    (
        "Edema",
        r"(?:pulmonary )?vascula(?:rity|ture|r markings)",
        r"increased|prominen\w*|engorged|congest\w*|indistinct\w*|cephaliz\w*|redistribut\w*",
        r"normal\w*|unremarkable|within normal limits",
    ),
    ("Lung Opacity", r"lungs?(?: fields?)?", NEVER, r"clear"),
    (
        "Pleural Effusion",
        r"(?:costophrenic|cp) (?:angles?|sulci|sulcus|recess\w*)",
        NEVER,  # "blunted" is a mention pattern above
        r"sharp\w*|clear|normal\w*|preserved",
    ),
)

#: Negation cues before a mention ("no", "without", "negative for", "free of", ...).
PRE_NEGATION = (
    r"\bno\b(?! (?:\w+ ){0,2}(?:change|increase|worsen))",
    r"\bnot\b(?! (?:significantly )?(?:changed|only))",
    r"\bwithout\b(?! (?:\w+ ){0,2}change)",
    r"\bnegative for\b|\bfree of\b|\babsence of\b|\babsent\b|\bclear of\b|\brather than\b",
    r"\bnor\b|\bnever\b|\bresolution of\b|\bresolved\b|\bremoval of\b|\bremoved\b",
    r"\bclearing of\b|\bnegative\b",
)
#: Negation cues after a mention ("... is not seen", "... has resolved").
POST_NEGATION = (
    r"(?:is|are|was|were|has been|have been)?\s*(?:not|no longer) (?:\w+[ -])?"
    r"(?:seen|present|identified|demonstrated|visuali[sz]ed|evident|appreciated|noted|"
    r"visible|detected|apparent|definite)",
    r"(?:has|have)?\s*(?:resolved|cleared|been removed|been withdrawn)",
    r"(?:is|are|has|have) (?:been )?(?:removed|absent|negative)",
    r"(?:is|are|appears?|remains?) (?:\w+ )?(?:within (?:the )?(?:normal limits|limits of normal)|"
    r"normal|unremarkable)",
)
#: Uncertainty cues before a mention ("may", "possible", "concerning for", ...).
PRE_UNCERTAINTY = (
    r"\b(?:may|might|could|can)\b(?! not)",
    r"\bpossibl[ey]\b|\bprobabl[ey]\b|\blikely\b|\bmaybe\b|\bperhaps\b",
    r"\bsuggest\w*|\bquestionabl[ey]\b|\bquestion of\b|\bconcern\w* (?:for|of)\b",
    r"\bsuspicious\b|\bsuspect\w*|\bdifferential\b|\bconsider(?:ed|ation)?\b|\bpresum\w*",
    r"\bindeterminate\b|\buncertain\b|\bequivocal\b|\bborderline\b|\bfavou?r\w*",
    r"\bworrisome\b|\bpotential\w*|\bversus\b|\bvs\.?(?=\s)|\batypical\b",
    r"\b(?:cannot|can't|not) (?:be )?(?:entirely |completely )?(?:excluded?|ruled? out)\b",
    r"\bneither\b|\bquestion\b|\bdifficult to (?:completely |entirely )?exclude\b|\brule out\b",
    r"\bcorrelat\w* (?:clinically )?(?:for|with)\b|\bclinical correlation\b|\bevaluat\w* for\b",
    r"\bfor (?:further )?evaluation of\b",
)
#: Uncertainty cues right after a mention (at most 2 words between): "X versus Y", "X?".
NEAR_POST_UNCERTAINTY = (r"\bversus\b|\bvs\.?(?=\s)", r"\?")
#: Uncertainty cues after a mention ("... cannot be excluded", "... is possible").
POST_UNCERTAINTY = (
    r"(?:(?:is|are|was|were) )?(?:can ?not|can't|not|could not) (?:be )?(?:entirely |completely )?"
    r"(?:excluded|ruled out|exclude)",
    r"(?:is|are|would be) (?:also )?(?:possible|likely|probable|suspected|questioned|considered|"
    r"a consideration|a possibility|favou?red|not excluded)|\bin the differential\b",
)
#: Clause boundaries: negation and uncertainty never cross them.
CLAUSE_BREAK = (
    r";|\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bexcept\b|\bwhereas\b|\bapart from\b|"
    r"\bwhich\b|\bwith the exception of\b|\bnonetheless\b|\bnevertheless\b|\bdespite\b"
    r"|,\s*(?=(?:there|the|this|these|it|and there|and the|which|that)\b)"
    r"|\band\s+(?=(?:there|the|is|are)\b)"
)
#: Explicit normal statements: a sentence-level "No Finding" when no finding is asserted.
NORMAL_STATEMENTS = (
    r"\bno acute (?:\w+ )?(?:\w+ )?(?:abnormalit\w*|disease|process\w*|findings?|"
    r"patholog\w*|changes?)",
    r"\bno (?:active|acute) (?:\w+ )?disease\b",
    r"\bnormal (?:chest|exam\w*|study|radiograph\w*|x-?\w*)\b",
    r"\b(?:chest|exam\w*|study) (?:is |are )?(?:normal|negative|unremarkable)\b",
    r"\bnegative (?:chest|exam\w*|study)\b",
    r"\bno (?:significant |radiographic |evidence of )?(?:acute )?cardiopulmonary "
    r"(?:abnormalit\w*|disease|process)",
)
