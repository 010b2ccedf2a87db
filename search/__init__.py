"""convlab's Optuna layer: search specs, the driver that runs one ``fit`` process tree per trial,
the trial-side callback, storages and the study report. See search/README.md."""
