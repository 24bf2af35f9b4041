"""Scene graphs for any video: decoding, clip scheduling, prediction, drawing, timeline, attention maps.

- :mod:`.api`: ``load_model(checkpoint) -> SceneGraphPredictor``, ``predict_video(path, predictor) -> [FrameGraph]``;
- :mod:`.video`: sampled frames of a video file or an image folder (PyAV), mp4 writing;
- :mod:`.clips`: windowed and causal clip schedules over a frame stream;
- :mod:`.graph`: ranked, readable triplets of a frame (``FrameGraph``, ``Triplet``);
- :mod:`.draw`, :mod:`.timeline`: annotated frames and the relation timeline;
- :mod:`.output`: the files of ``arn-lightning infer``, written all or nothing;
- :mod:`.attention`, :mod:`.evaluation`: entity-query attention maps and test-split scoring (the notebook).

Submodules are imported on use, so that drawing does not pay for the model's imports.
"""
