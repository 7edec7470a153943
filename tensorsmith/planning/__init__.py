"""What a run will cost before it runs: parameters, FLOPs, memory, time, money, serving.

``hardware`` is the table of devices (kept as data in ``hardware.yaml``); ``count`` counts a
built module; ``calibrate`` times steps on this machine; ``estimate`` adds it up into a
``Plan``; ``report`` shows a plan, a sweep or a comparison with a finished run.
"""
