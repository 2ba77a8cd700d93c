"""A negation- and uncertainty-aware lexicon labeller over the 55 SRR-BERT leaves.

It is (1) the offline labeller that produces silver sentence labels for training the classifier, (2) the
baseline the trained classifier is compared against, and (3) a :class:`~medfm.methods.srrg.classifier`
drop-in (same ``predict(texts) -> list[Findings]``) for the metric and the offline structurer.

Rules (NegEx-style, per clause): a sentence is split into clauses at ``but``, ``however``, ``although``,
``;`` and ``with the exception of``; within a clause a pre-negation cue (``no``, ``without``, ``negative
for``, ``free of``, ``resolved``...) negates the findings after it, a post-negation cue (``is not seen``,
``has resolved``, ``are absent``...) those before it; uncertainty cues (``possible``, ``may``, ``cannot be
excluded``, ``suggestive of``...) make them Uncertain. Negation wins over uncertainty when both apply
("no definite consolidation" is Absent). A clause with a normal statement ("no acute cardiopulmonary
process", "lungs are clear") and no finding labels gives ``No Finding``. Mapping decisions recorded here:
"consolidation" and "infiltrate" map to the Pneumonia leaf (Consolidation is not a leaf), generic
"airspace opacity/disease" to ``Air space opacity–multifocal``, "pleural thickening" to Pleural scarring,
tubes/lines are labelled only when a malposition is stated (the device leaves are "Suboptimal ...") except
the devices whose presence is itself the leaf (pleural tube, PICC, port, pacemaker, ICD, LVAD, IABP).
Torch-free.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from medfm.methods.srrg.labels import NO_FINDING, Findings

_W = r"(?:\w+\s+){0,3}?"  # up to three words in between
_MAL = r"(?:malposition\w*|suboptimal\w*|too (?:high|low|deep|far)|(?:should|could) be (?:advanced|withdrawn|retracted|pulled back)|in the (?:right main(?:stem)? bronchus|esophagus|neck|azygous|azygos)|coiled|kinked|recommend(?:ed)? (?:advancement|withdrawal|repositioning)|not in (?:the )?(?:stomach|satisfactory))"

#: leaf -> regular expressions (lower-case text). Order matters only for readability.
LEXICON: dict[str, tuple[str, ...]] = {
    "Lung Lesion": (r"\blung lesions?\b", r"\bpulmonary lesions?\b", r"\b(?:lung|pulmonary) neoplasm",
                    r"\bmalignan\w+", r"\bmetasta\w+", r"\btumou?rs?\b", r"\bgranulomas?\b", r"\bgranulomatous\b"),
    "Edema": (r"\bedema\b", r"\boedema\b", r"\binterstitial (?:markings|prominence|thickening)\b",
              r"\bkerley\b", r"\bfluid overload\b", r"\bheart failure\b", r"\bchf\b", r"\bperibronchial cuffing\b"),
    "Pneumonia": (r"\bpneumonias?\b", r"\bconsolidat\w*", r"\binfiltrat\w*", r"\binfect\w*", r"\bpneumonitis\b",
                  r"\bbronchopneumonia\b"),
    "Atelectasis": (r"\batelecta\w*", r"\bsubsegmental collapse\b", r"\bplate-?like\b", r"\bdiscoid\b",
                    r"\bvolume loss\b", r"\bbibasilar (?:opacit|densit)\w*"),
    "Aspiration": (r"\baspirat\w*",),
    "Lung collapse": (r"\b(?:lung|lobar|lobe|segmental) collapse\b", r"\bcollapsed? (?:of )?(?:the )?(?:right|left)?\s*"
                      r"(?:upper |middle |lower )?(?:lung|lobe)\b", r"\bwhite-?out\b"),
    "Perihilar airspace opacity": (r"\bperihilar (?:air ?space )?(?:opacit|haz|densit)\w*",),
    "Air space opacity\u2013multifocal": (r"\bair ?space (?:opacit\w*|disease|process)", r"\bopacit(?:y|ies)\b",
                                          r"\bdensit(?:y|ies)\b", r"\bground[- ]glass\b", r"\bhaz(?:e|iness|y)\b",
                                          r"\balveolar\b"),
    "Mass/Solitary lung mass": (r"\bmass(?:es)?\b", r"\bmass-?like\b"),
    "Nodule/Solitary lung nodule": (r"\bnodul\w*", r"\bcoin lesion\b"),
    "Cavitating mass with content": (r"\bcavit\w+ (?:mass|lesion) with\b", r"\bair-?fluid level\b(?!.*pleura)",
                                     r"\babscess\w*", r"\bmycetoma\b", r"\baspergilloma\b"),
    "Cavitating masses": (r"\bcavit\w*",),
    "Emphysema": (r"(?<!subcutaneous )(?<!surgical )\bemphysema\w*", r"\bcopd\b", r"\bhyperinflat\w*",
                  r"\bhyperexpan\w*", r"\bbull(?:a|ae|ous)\b", r"\bblebs?\b", r"\bchronic obstructive\b",
                  r"\bhyperlucen\w*", r"\bflattened? (?:the )?(?:hemi)?diaphragms?\b"),
    "Fibrosis": (r"\bfibros\w*", r"\bfibrotic\b", r"\binterstitial lung disease\b", r"\bhoneycomb\w*",
                 r"\bscar(?:ring|s)?\b(?!.*pleura)", r"\bcicatri\w*", r"\breticula\w*"),
    "Pulmonary congestion": (r"\bcongesti\w*", r"\bvascular (?:redistribution|engorgement|prominence|crowding)",
                             r"\bcephalization\b", r"\bpulmonary venous hypertension\b",
                             r"\bprominen\w* (?:pulmonary )?vascula\w*", r"\bvascular markings\b"),
    "Hilar lymphadenopathy": (r"\bhilar (?:lymph\w*|adenopath\w*|enlargement|fullness|prominence|mass)",
                              r"\blymphadenopath\w*", r"\badenopath\w*", r"\benlarged (?:lymph )?nodes\b",
                              r"\bhil(?:a|um|ar) (?:are|is) (?:enlarged|prominent|full)"),
    "Bronchiectasis": (r"\bbronchiecta\w*", r"\bbronchial wall thickening\b", r"\bairway thickening\b"),
    "Simple pneumothorax": (r"\bpneumothora\w*", r"\bptx\b", r"\bpleural air\b"),
    "Loculated pneumothorax": (r"\bloculated pneumothora\w*",),
    "Tension pneumothorax": (r"\btension\b", r"\btension pneumothora\w*"),
    "Simple pleural effusion": (r"\beffusions?\b", r"\bpleural fluid\b", r"\bcostophrenic (?:angle )?blunting\b",
                                r"\bblunt\w* (?:of )?(?:the )?(?:right |left |bilateral |posterior )?costophrenic",
                                r"\bhydrothorax\b", r"\bfluid in the (?:minor |major )?fissure"),
    "Loculated pleural effusion": (r"\bloculated (?:pleural )?effusion", r"\bempyema\b"),
    "Pleural scarring": (r"\bpleural (?:scar\w*|thicken\w*|plaques?|calcification\w*)", r"\bapical cap",
                         r"\bpleural-?parenchymal scar"),
    "Hydropneumothorax": (r"\bhydro-?pneumothora\w*",),
    "Pleural Other": (r"\bpleural (?:abnormalit\w*|disease|lesion|mass|process)",),
    "Cardiomegaly": (r"\bcardiomegal\w*", r"\b(?:heart|cardiac) (?:is |appears |remains )?(?:mildly |moderately |"
                     r"markedly |severely |borderline |slightly )?(?:enlarged|enlargement|large)",
                     r"\benlarge\w* (?:of )?(?:the )?(?:heart|cardiac)", r"\bcardiac silhouette is enlarged\b",
                     r"\benlarged cardiac silhouette\b", r"\bcardiomediastinal silhouette is enlarged\b",
                     r"\bheart size (?:is )?(?:enlarged|increased)", r"\bcardiac enlargement\b"),
    "Pericardial effusion": (r"\bpericardial (?:effusion|fluid)\b",),
    "Inferior mediastinal mass": (r"\b(?:inferior|posterior|lower) mediastin\w* mass",),
    "Superior mediastinal mass": (r"\b(?:superior|anterior|upper) mediastin\w* (?:mass|widening)",
                                  r"\bmediastinal (?:mass|widening)\b", r"\bwiden\w* (?:of )?(?:the )?(?:superior )?"
                                  r"mediastin\w*", r"\bgoiter\b", r"\bthyroid enlargement\b"),
    "Tortuous Aorta": (r"\btortu\w*", r"\b(?:aorta|aortic arch) is (?:ectatic|unfolded|uncoiled|tortuous|dilated)",
                       r"\bunfold\w* (?:of )?(?:the )?(?:thoracic )?aorta", r"\bectatic\b", r"\baortic ectasia\b",
                       r"\bwidened aort\w*"),
    "Calcification of the Aorta": (r"\baort\w* (?:knob |arch )?(?:calcif\w*|atherosclero\w*)",
                                   r"\bcalcif\w* (?:of )?(?:the )?(?:aort\w*|aortic knob|arch)",
                                   r"\batherosclero\w*", r"\bcalcified aort\w*"),
    "Enlarged pulmonary artery": (r"\b(?:enlarged|prominent|dilated) (?:central )?pulmonary arter\w*",
                                  r"\bpulmonary arter\w* (?:are |is )?(?:enlarged|prominent|dilated)",
                                  r"\bpulmonary (?:arterial )?hypertension\b"),
    "Hernia": (r"\bhernia\w*",),
    "Pneumomediastinum": (r"\bpneumomediastin\w*", r"\bmediastinal air\b"),
    "Tracheal deviation": (r"\btrache\w* (?:is )?(?:deviat\w*|shift\w*|displac\w*)", r"\bdeviat\w* (?:of )?(?:the )?trachea",
                           r"\bmediastinal shift\b"),
    "Acute humerus fracture": (r"\bhumer\w* (?:\w+ ){0,3}fractur\w*", r"\bfractur\w* (?:\w+ ){0,3}humer\w*"),
    "Acute rib fracture": (r"\brib (?:\w+ ){0,2}fractur\w*", r"\bfractur\w* (?:\w+ ){0,4}ribs?\b",
                           r"\bfractur\w*(?! (?:\w+ ){0,4}(?:humer|clavic|scapul|vertebr|spine|compression))"),
    "Acute clavicle fracture": (r"\bclavic\w* (?:\w+ ){0,2}fractur\w*", r"\bfractur\w* (?:\w+ ){0,3}clavic\w*"),
    "Acute scapula fracture": (r"\bscapul\w* (?:\w+ ){0,2}fractur\w*", r"\bfractur\w* (?:\w+ ){0,3}scapul\w*"),
    "Compression fracture": (r"\bcompression (?:\w+ )?(?:fractur\w*|deformit\w*)", r"\bvertebral body (?:height )?loss",
                             r"\bwedg\w* (?:compression|deformit\w*|vertebra)", r"\bloss of (?:vertebral )?height",
                             r"\bvertebral (?:body )?fractur\w*", r"\bosteoporotic fractur\w*"),
    "Shoulder dislocation": (r"\bdislocat\w*",),
    "Subcutaneous Emphysema": (r"\bsubcutaneous (?:emphysema|air|gas)\b", r"\bsoft tissue (?:emphysema|air|gas)\b",
                               r"\bsurgical emphysema\b"),
    "Suboptimal central line": (rf"\b(?:central (?:venous )?(?:line|catheter)|cvc|ij (?:line|catheter)|subclavian "
                                rf"(?:line|catheter)|dialysis catheter)\b.*{_MAL}",
                                rf"{_MAL}.*\b(?:central (?:venous )?(?:line|catheter)|cvc)\b"),
    "Suboptimal endotracheal tube": (rf"\b(?:endotracheal|et|ett) tube\b.*{_MAL}", rf"{_MAL}.*\b(?:endotracheal|et) tube",
                                     rf"\bett\b.*{_MAL}", r"\bright main ?stem intubation\b"),
    "Suboptimal nasogastric tube": (rf"\b(?:nasogastric|ng|og|orogastric|enteric|feeding|dobhoff) tube\b.*{_MAL}",
                                    rf"{_MAL}.*\b(?:nasogastric|ng|enteric|feeding) tube"),
    "Suboptimal pulmonary arterial catheter": (rf"\b(?:swan[- ]ganz|pulmonary arter\w* catheter|pa catheter)\b.*{_MAL}",
                                               r"\b(?:swan[- ]ganz|pa catheter)\b.*\b(?:distal|wedg\w*)"),
    "Pleural tube": (r"\b(?:chest|pleural|thoracostomy|pigtail) (?:tubes?|drains?|catheters?)\b",
                     r"\bintercostal drain\w*"),
    "PICC line": (r"\bpicc\b", r"\bperipherally inserted central catheter\b"),
    "Port catheter": (r"\bport-?a-?cath\w*", r"\bport\b", r"\bmediport\b", r"\bportacath\b"),
    "Pacemaker": (r"\bpacemaker\w*", r"\bpacer\b", r"\bpacing (?:leads?|wires?|device)\b",
                  r"\bdual[- ]lead\b", r"\btransvenous (?:pacing )?leads?\b"),
    "Implantable defibrillator": (r"\b(?:a?icd|defibrillator\w*|cardioverter)\b",),
    "LVAD": (r"\blvad\b", r"\bventricular assist device\b"),
    "Intraaortic balloon pump": (r"\biabp\b", r"\bintra-?aortic balloon\b", r"\bballoon pump\b"),
    "Pneumoperitoneum": (r"\bpneumoperitone\w*", r"\bfree (?:intraperitoneal |abdominal )?air\b",
                         r"\bfree air under\b", r"\bsubdiaphragmatic (?:free )?(?:air|gas)\b"),
}  # fmt: skip

# A more specific leaf suppresses its generic sibling when both match in the same clause.
_SUPPRESS: dict[str, tuple[str, ...]] = {
    "Loculated pneumothorax": ("Simple pneumothorax",),
    "Tension pneumothorax": ("Simple pneumothorax",),
    "Hydropneumothorax": ("Simple pneumothorax", "Simple pleural effusion"),
    "Loculated pleural effusion": ("Simple pleural effusion",),
    "Pericardial effusion": ("Simple pleural effusion",),
    "Subcutaneous Emphysema": ("Emphysema",),
    "Acute humerus fracture": ("Acute rib fracture",),
    "Acute clavicle fracture": ("Acute rib fracture",),
    "Acute scapula fracture": ("Acute rib fracture",),
    "Compression fracture": ("Acute rib fracture",),
    "Cavitating mass with content": ("Cavitating masses", "Mass/Solitary lung mass"),
    "Perihilar airspace opacity": ("Air space opacity\u2013multifocal",),
    "Inferior mediastinal mass": ("Mass/Solitary lung mass", "Superior mediastinal mass"),
    "Superior mediastinal mass": ("Mass/Solitary lung mass",),
    "Hilar lymphadenopathy": ("Mass/Solitary lung mass",),
    "Pleural Other": ("Mass/Solitary lung mass",),
    "Edema": ("Air space opacity\u2013multifocal",),
    "Pneumonia": ("Air space opacity\u2013multifocal",),
    "Atelectasis": ("Air space opacity\u2013multifocal",),
    "Lung collapse": ("Atelectasis",),
    "Pleural scarring": ("Fibrosis",),
    "Tracheal deviation": (),
    "Implantable defibrillator": ("Pacemaker",),
    "Calcification of the Aorta": (),
    "Tortuous Aorta": (),
}
_TENSION_CONTEXT = re.compile(r"tension pneumothora|pneumothora\w* .{0,30}tension|tension .{0,20}(?:physiology|shift)")

_PRE_NEG = re.compile(
    r"\b(?:no|not|without|negative for|free of|absence of|absent|resolved|resolution of|rather than|clear of|"
    r"neither|nor|never|removal of|removed|interval removal of|no evidence of|no signs? of|cannot see)\b"
)
_POST_NEG = re.compile(
    r"\b(?:(?:is|are|was|were|has|have) (?:not|no longer) (?:\w+ )?(?:seen|present|identified|visualized|evident|"
    r"demonstrated|appreciated|noted|visible)|(?:has|have) resolved|resolved|(?:is|are|were|was) absent|"
    r"(?:is|are|was|were) removed|not (?:seen|identified|present|visualized|appreciated)|excluded|ruled out|"
    r"(?:is|are|was|were) clear|(?:is|are) normal|within normal limits|unremarkable)\b"
)
_UNCERTAIN = re.compile(
    r"\b(?:possibl[ey]|probabl[ey]|may|might|could|questionabl[ey]|question of|suspect\w*|suspicio\w*|"
    r"concern\w* for|suggest\w*|likely|cannot be (?:excluded|ruled out)|can not be (?:excluded|ruled out)|"
    r"not (?:be )?excluded|versus|vs\.?|differential|consider\w*|indeterminate|equivocal|borderline|"
    r"presum\w*|compatible with|consistent with|represent\w*|favou?r\w*|worrisome|r/o|rule out|"
    r"cannot exclude|difficult to exclude|uncertain|unclear|either|or (?:less likely|early))\b"
)
# "consistent with" / "compatible with" read as Present in most radiology conventions; kept uncertain above only
# when no stronger statement is made. They are treated as Present below (see _status).
_SOFT_UNCERTAIN = re.compile(r"\b(?:consistent with|compatible with|represent\w*)\b")
_CLAUSE_SPLIT = re.compile(r"\b(?:but|however|although|though|whereas|otherwise|except|which|while)\b|;|:| - ")
_NORMAL = re.compile(
    r"\b(?:no acute (?:cardio\w*|intrathoracic|chest|pulmonary|radiographic|osseous|bony|abnormalit|disease|"
    r"process|findings?|cardiopulmonary)\w*|no active (?:cardio\w* )?disease|normal (?:chest|study|examination|"
    r"exam|radiograph|x-?ray)|(?:lungs?|lung fields) (?:are |is |appear |remain )?(?:clear|normal|well[- ]expanded and clear)|"
    r"clear lungs|no (?:significant )?(?:abnormalit\w*|acute findings?)|unremarkable (?:chest|study|exam\w*)|"
    r"(?:chest|study) (?:is )?(?:normal|unremarkable)|no acute (?:abnormality|process)|negative (?:chest|exam\w*|study)|"
    r"no (?:radiographic )?evidence of (?:acute )?(?:cardio\w*|active) (?:disease|process)|"
    r"(?:heart|cardiac|cardiomediastinal|mediastinal)\w* (?:size |silhouette |contours? )?(?:and \w+ )?"
    r"(?:is |are |appears? )?(?:normal|within normal limits|unremarkable|stable)|"
    r"normal (?:heart|cardiac|cardiomediastinal|mediastinal)|no (?:focal )?airspace disease)"
)
_HEART_NORMAL = re.compile(
    r"\b(?:heart|cardiac)(?: size| silhouette)? (?:is |are |appears? |remains? )?(?:normal|within normal limits|"
    r"unremarkable|not enlarged)|\bnormal (?:heart|cardiac) (?:size|silhouette)|\bheart size (?:is )?normal"
    r"|cardiomediastinal silhouette (?:is |appears )?(?:normal|within normal limits|unremarkable)"
)

_COMPILED = {leaf: tuple(re.compile(p) for p in pats) for leaf, pats in LEXICON.items()}


def _clause_findings(clause: str) -> Findings:
    hits: dict[str, int] = {}
    for leaf, pats in _COMPILED.items():
        for p in pats:
            m = p.search(clause)
            if m and (leaf not in hits or m.start() < hits[leaf]):
                hits[leaf] = m.start()
    if "Tension pneumothorax" in hits and not _TENSION_CONTEXT.search(clause):
        hits.pop("Tension pneumothorax")
    for specific, generic in _SUPPRESS.items():
        if specific in hits:
            for g in generic:
                hits.pop(g, None)
    out: Findings = {}
    if not hits:
        if _HEART_NORMAL.search(clause):
            return {"Cardiomegaly": "Absent"}
        if _NORMAL.search(clause):
            return {NO_FINDING: "Present"}
        return {}
    for leaf, pos in hits.items():
        out[leaf] = _status(clause, pos)
    return out


def _status(clause: str, pos: int) -> str:
    before, after = clause[:pos], clause[pos:]
    neg = _PRE_NEG.search(before) is not None or _POST_NEG.search(after) is not None
    if neg:
        return "Absent"
    unc = [m for m in _UNCERTAIN.finditer(clause) if not _SOFT_UNCERTAIN.fullmatch(m.group(0))]
    return "Uncertain" if unc else "Present"


def label_sentence(sentence: str) -> Findings:
    """Findings ``{leaf: status}`` of one sentence (see module docstring for the rules)."""
    text = " " + " ".join(sentence.lower().split()) + " "
    text = text.replace("x-ray", "xray")
    clauses = [c for c in _CLAUSE_SPLIT.split(text) if c.strip()]
    merged: Findings = {}
    normal = False
    # A negation cue opening the sentence carries over coordinated lists split into clauses ("no A, B or C").
    for clause in clauses:
        f = _clause_findings(clause)
        if NO_FINDING in f:
            normal = True
            continue
        for leaf, status in f.items():
            merged.setdefault(leaf, status)
    if not merged and normal:
        return {NO_FINDING: "Present"}
    return merged


class LexiconLabeller:
    """The lexicon labeller as a finding classifier: ``predict(texts) -> list[Findings]``."""

    name = "lexicon"

    def predict(self, texts: Sequence[str]) -> list[Findings]:
        """Findings of each text (one sentence / utterance per item)."""
        return [label_sentence(t) for t in texts]
