"""Scale-out on Redis: the sink, worker mode, and consumers on other machines
(docs/scale.md). Needs ``pip install 'bitmusa-plugin[redis]'``; nothing here is imported
unless it is used."""
