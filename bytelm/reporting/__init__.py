"""Seeing a run: pure functions of logits, logs and packs that turn them into text, pictures and a page.

probe    what the model predicts, byte by byte, on one fixed validation window
plots    the loss curves as a PNG (one run or several)
charts   line charts as inline SVG for the report page (matplotlib)
report   the run's self-contained HTML page, and its terminal summary
shapes   every module's and parameter's shape, inferred without allocating
browser  headless Chromium: the page's rendered DOM and a screenshot
"""
