"""Search spaces for `experiments/sweep_fusion.py --space NAME` (a file here) or `--space path/to/space.py`.

A space is a plain Python file, loaded by path (this folder is not part of the installed package):

    SPACE: dict          configuration fields (avasr.config.Config) -> a fixed value or a Ray Tune domain
                         (tune.grid_search, tune.choice, tune.loguniform, ...). `epochs` must be fixed: it is the
                         budget ASHA stops trials within. Sweep-only keys (`fail_at_epoch`) are allowed.
                         The sweep sets the manifests, cache and output folders itself.
    NUM_SAMPLES: int     samples drawn (each grid point is repeated NUM_SAMPLES times); default 1
    SEEDS: int           training seeds per configuration (--seeds overrides); default 1
    ASHA: dict           grace_period and reduction_factor of the ASHA scheduler; default {} (Ray's defaults)

Every value of a space is checked through Config.from_dict before anything starts, so a typo in a fusion name or
a field name is refused with the list of valid ones.
"""
