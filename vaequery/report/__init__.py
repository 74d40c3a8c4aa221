"""The reporting layer: what reads a :class:`~vaequery.Posterior`.

The result object (:mod:`vaequery.posterior`) stays small: draws,
imputations, persistence and thin methods. Each kind of reading has a module
here, and :mod:`vaequery.compare` uses the same ones:

* :mod:`~vaequery.report.metrics` -- IWAE ``log p(x_U | x_O)``, NRMSE, HDI;
* :mod:`~vaequery.report.arviz` -- conversion to :class:`arviz.InferenceData`;
* :mod:`~vaequery.report.diagnostics` -- PSIS k-hat, R-hat/ESS, importance
  resampling;
* :mod:`~vaequery.report.plots` -- ArviZ density, trace and forest plots;
* :mod:`~vaequery.report.tables` -- tidy pandas tables of draws.

These modules take a posterior as an argument and never import
:mod:`vaequery.posterior`, so the layer has no import cycle.
"""
