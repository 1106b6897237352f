"""helpers.stats: the study's computations, pure functions on tables.

Every function here takes data frames (predictions, pairs, comparisons) or parsed tables (the
paper's reported results) and returns numbers or tables; nothing reads or writes files, the
store or ``params/``. The only project module imported is ``helpers.data`` (labels, the data
error); the rest is numpy, pandas, scipy, scikit-learn and statsmodels. Reading the store for
analysis is ``helpers.run.results``; figures are ``helpers.report.plots``.

Modules, one job each:

- ``metrics``: the paper's metrics (two-/three-class WAF and accuracy, swap and round
  consistency, normal-reverse voting, McNemar, Pearson) with paired bootstrap CIs over pairs;
- ``voting``: majority votes of the top-k judges (the paper's crowdsourcing experiment);
- ``confound``: the length confound: the data audit, length strata, length GLMs, the
  length-balanced accuracy, and the confound chapter's tables and prose;
- ``bt``: Bradley–Terry ratings, one Newton fitter with optional covariates (plain and
  style-controlled), bootstrap CIs, CI-aware ranks;
- ``simulate``: simulated judges and comparisons with known properties, and the ranking-fidelity
  simulation (how many judged comparisons rank M systems correctly).
"""
