"""Running one generation over several processes (``torchrun``): Ulysses sequence parallelism
(``ulysses``), FSDP weight sharding (``sharding``) and the process group's life (``launch``).
Knows nothing of Wan: the models and pipelines use it."""
