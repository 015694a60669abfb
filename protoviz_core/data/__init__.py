"""The images: ``stl10`` (STL10's binary layout, read as memory maps), ``synthetic`` (the
offline set in that layout, where shape, not colour, is the class), ``dataset`` (prepares
either from params) and ``spectrum`` (the data's mean amplitude spectrum, maco's prior).

May import: pipeline, models, engine, infra.
"""
