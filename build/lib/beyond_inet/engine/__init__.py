"""Engine: plan jobs, run models once per (model, dataset, view), store per-sample outputs."""
