"""Running one generation over several processes (``torchrun``): Ulysses sequence parallelism
(``ulysses``), frames split in bands of rows (``row_split``), both a ``process_split``, FSDP
weight sharding (``sharding``) and the process group's life (``launch``).
Knows nothing of Wan: the models and pipelines use it."""
