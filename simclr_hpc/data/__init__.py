"""Datasets, shards and input pipelines: the only package that knows WebDataset's format.

``sources`` opens datasets on disk (or generates ``shapes``), ``shards`` writes/reads/verifies WebDataset shard
directories, ``subsets`` draws label fractions and class subsets, ``augment`` holds the SimCLR transforms (on
``decode``, ``colour`` and ``blur``) and ``pipeline`` the training and evaluation loaders (on ``stream``,
``shard_reader`` and ``batching``). Importing this package imports no torch; those modules do.
"""

from simclr_hpc.data.sources import DataError

__all__ = ["DataError"]
