"""Pictures of scene graphs: boxes and triplets on a frame, the relation timeline, a frame's scene graph as a graph.

- :mod:`.annotate`: boxes, labels and triplets drawn on a frame (Pillow);
- :mod:`.timeline`: the relation timeline of a video (matplotlib);
- :mod:`.graph_plot`: a frame's scene graph as a graph (networkx + matplotlib).

Nothing is imported here, so that the inference path imports matplotlib only when it draws.
"""
