"""The offline Fréchet distance (`fpa-fd`) and its seeded random-network features, in one package.

    features.py   the random VGG-19 ("ranVGG") and its pooled feature vector
    frechet.py    statistics (mean, covariance) and the distance itself; imports only torch/numpy
    metric.py     sources (folders, models, saved statistics) → distances over feature seeds
    realstats.py  real-image statistics prepared once, and the distance of samples against them
    realfolder.py the real-image folder that FID tools read (`fpa-sample stats --write-folder`)

`features` and `frechet` stand on the ground floor only (torch, numpy), so training may use them for
its quality metric without importing the rest of the export side. Nothing is imported here: import the
module you need (`from fpa_export.fd.frechet import compute_stats`).
"""
