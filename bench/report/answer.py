"""The report's opening paragraph: the answer to "does an RNN need full hidden-to-hidden
connectivity?" for this run, generated from the claim verdicts alone (no numbers are
re-read here, so the paragraph cannot disagree with the claims table)."""

from __future__ import annotations

from connbench.report import verdicts as V

# claim key -> (sentence when supported, when not supported, when undecided)
SENTENCES = {
    "diagonal_fails": (
        "a diagonal-only W_hh (no mixing between units) fails binary addition",
        "a diagonal-only W_hh still learns binary addition",
        "whether a diagonal-only W_hh fails binary addition is not settled"),
    "band_matches": (
        "a 3-wide band matches full on binary addition",
        "a 3-wide band does not match full on binary addition",
        "whether a 3-wide band matches full on binary addition is not settled"),
    "butterfly": (
        "the butterfly (every unit reaches every other in log2 H stages) learns as well "
        "as full",
        "the butterfly does not learn as well as full",
        "whether the butterfly learns as well as full is not settled"),
    "sparse_competitive": (
        "structurally sparse RNNs (diagonal, block) are competitive with full at equal "
        "size, parameters and time",
        "structurally sparse RNNs (diagonal, block) are not competitive with full",
        "whether structurally sparse RNNs are competitive with full is not settled"),
}
# claims that a structure short of full does as well as full
SPARSE_SUFFICES = ("band_matches", "butterfly", "sparse_competitive")


def _sentence(key: str, verdict: str) -> str:
    yes, no, open_ = SENTENCES[key]
    if verdict == V.MIXED:
        return f"{yes} in some settings and not in others"
    return yes if verdict == V.SUPPORTED else no if verdict == V.NOT_SUPPORTED else open_


def answer_paragraph(claims) -> list[str]:
    """Markdown lines: one bolded answer, then what each verdict says."""
    by_key = {c.key: c.verdict for c in claims}
    enough = [k for k in SPARSE_SUFFICES if by_key.get(k) == V.SUPPORTED]
    short = [k for k in SPARSE_SUFFICES if by_key.get(k) == V.NOT_SUPPORTED]
    mixed = [k for k in SPARSE_SUFFICES if by_key.get(k) == V.MIXED]
    if enough:
        head = ("**No, not in this run**: at least one structure with far fewer "
                "recurrent connections did as well as full.")
    elif mixed:
        head = ("**Not everywhere, in this run**: structures with far fewer recurrent "
                "connections did as well as full in some settings and fell short in "
                "others, so the answer depends on the task and the budget.")
    elif short and len(short) == len([k for k in SPARSE_SUFFICES if k in by_key]):
        head = ("**Yes, in this run**: no structure short of full matched it wherever it "
                "was tested.")
    else:
        head = ("**Not settled by this run**: no structure short of full was shown to "
                "match it, and not every claim against it was decided.")
    said = [_sentence(k, by_key[k]) for k in SENTENCES if k in by_key]
    fewer = by_key.get("fewer_params")
    if fewer is not None:
        said.append("an RNN needs far fewer parameters than a dense network over the "
                    f"unrolled sequence: {fewer}")
    body = "; ".join(said)
    return [head + " In detail: " + body[0].lower() + body[1:] + ".", ""]
