"""The bad-input harness: one `BadInput` row per bad input, `run_bad_inputs` runs them, `bad_input_table` renders them.

A test helper (not part of the library): used by tests/test_reliability.py and by the catalogue in
nbs/12_reliability.ipynb, which puts this folder on sys.path."""
import warnings
from dataclasses import dataclass
from typing import Callable


@dataclass
class BadInput:
    "One bad input: what, where, how to trigger it, and the expected error (or warning) type and message excerpt."
    what: str # the bad input, in words
    where: str # the function it is passed to
    call: Callable # zero-argument callable that passes it
    expected: type # the exception type expected (or a Warning subclass for poor-but-valid data)
    contains: str # an excerpt the message must contain

def run_bad_inputs(cases:list # `BadInput` rows
                  ) -> list: # one dict per row: what, where, error, message, ok
    "Run every bad input; record the exception (or, for warning rows, the warning) it raised and whether it matched."
    rows = []
    for c in cases:
        err, msg = "returned", ""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try: c.call()
            except Exception as e:  # a KeyError's str() adds quotes: use its message
                err = type(e).__name__
                msg = e.args[0] if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str) else str(e)
        if issubclass(c.expected, Warning) and err == "returned":
            hits = [w for w in caught if issubclass(w.category, c.expected) and c.contains in str(w.message)]
            if hits: err, msg = c.expected.__name__, str(hits[0].message)
            elif caught: err, msg = caught[0].category.__name__, str(caught[0].message)
        ok = err == c.expected.__name__ and c.contains in msg
        rows.append(dict(what=c.what, where=c.where, error=err, message=msg, ok=ok))
    return rows

def bad_input_table(rows:list, # from `run_bad_inputs`
                    width:int=150 # message excerpt length, characters
                   ) -> str: # a markdown table
    "Markdown table of the bad inputs tried and the errors they give."
    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")
    out = ["| # | bad input | passed to | error | message (excerpt) |", "|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        m = r["message"] if len(r["message"]) <= width else r["message"][:width] + "..."
        out.append(f"| {i} | {esc(r['what'])} | `{r['where']}` | {'' if r['ok'] else '**UNEXPECTED** '}{r['error']} | {esc(m)} |")
    return "\n".join(out)
