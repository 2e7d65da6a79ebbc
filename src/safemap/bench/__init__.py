"""``safemap bench``: measure workloads on every map type and recommend one.

The package is layered, one job per module:

- :mod:`.protocol` - the operations a workload may call (``BenchMap``);
- :mod:`.peers` and :mod:`.registry` - the implementations measured (safemap's maps and
  the peers users already know), discovered by trying imports;
- :mod:`.keys`, :mod:`.workload`, :mod:`.gosync`, :mod:`.mixes`, :mod:`.bustle`,
  :mod:`.contention`, :mod:`.atomicity` and :mod:`.catalog` - the workload definitions;
- :mod:`.runner` and :mod:`.latency` - the measurements, with their correctness checks;
- :mod:`.results`, :mod:`.advisor` - the data and the recommendation;
- :mod:`.table`, :mod:`.summary`, :mod:`.plots`, :mod:`.report` - the outputs;
- :mod:`.config` and :mod:`.session` - what to run, and running it.

Every workload and the JSON schema are defined in ``docs/bench.md``.
"""
