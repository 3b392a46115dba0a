"""The Ray engine: the pipeline stages of :mod:`miner.stages` as Ray Data actor pools, resumable by block.

``--engine ray`` runs the heavy, embarrassingly parallel part of a job on a Ray cluster (a local one when no
address is given) and keeps the final, order-dependent step in this process, where the local engine does it:

- ``miner index build`` (text): the driver streams the corpus once into input blocks (``in_XXXXX.json``, the
  texts of ``block_size`` sentences); :class:`TextEmbedStage` actors embed them into ``block_XXXXX.npy`` and
  then write ``block_XXXXX.done``; :func:`miner.database_build.build_text_database` feeds the blocks, in order,
  to the same :class:`index.build.ShardWriter`. The work folder is ``<home>/.ray-work/index-<name>`` (removed
  once the database is complete).
- ``miner mine``: :class:`SpeechEmbedStage` actors fill the per-file segment+embed cache that the local engine
  uses (``OUT/cache/segments``: an entry's JSON is its completion marker); the forward kNN against the database
  runs in :class:`KnnStage` actors over blocks of query rows (``OUT/cache/knn-<digest>/block_XXXXX.npz`` +
  ``.done``); then :func:`miner.mine_job.run_mine` does the margin step over the merged candidates.
- ``miner embed text``: like the index build, then the blocks are concatenated into the output matrix.

A rerun skips every block that has its marker, so a killed job resumes. Inside an actor a block that raises is
retried (``RayOptions.retries`` times); its outputs go through temp names and ``os.replace`` and the marker is
written last, so a retried block overwrites its own files and is never counted twice. Ray restarts actors
whose process dies. Each actor signs in to a roster that the driver holds for the stage; the driver kills
them all when the stage ends, failed or not (after an error Ray Data alone can leave them alive, idle and
holding their CPUs). A pool that cannot start within ``RayOptions.start_timeout`` fails instead of waiting
forever. Outputs equal the local engine's (same ids, order, store and pairs) with vectors equal up to the last
bits: an encoder's float sums depend on the shape of the batch a text sits in (padding length, kernel choice,
on CPU as on GPU), and Ray's blocks batch differently from the local run.

Multi-node clusters: the work folders, the corpus, the audio and the models must be on storage that every
node sees at the same path (NFS, a shared volume); the driver passes paths, not data.
"""

from __future__ import annotations

from miner.distributed.blocks import BlockMatrix
from miner.distributed.jobs import ray_build_text_database, ray_embed_text, ray_run_mine
from miner.distributed.pool import run_blocks
from miner.distributed.session import ENGINES, RayOptions, check_engine, ray_session

__all__ = [
    "ENGINES",
    "BlockMatrix",
    "RayOptions",
    "check_engine",
    "ray_build_text_database",
    "ray_embed_text",
    "ray_run_mine",
    "ray_session",
    "run_blocks",
]
