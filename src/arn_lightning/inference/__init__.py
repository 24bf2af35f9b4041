"""Scene graphs for any video from a checkpoint: prediction engines and their output files.

- :mod:`.api`: ``load_model(checkpoint) -> SceneGraphPredictor``, ``predict_video(path, predictor) -> [FrameGraph]``;
- :mod:`.clips`: windowed and causal clip schedules over a frame stream;
- :mod:`.streaming`: ``StreamingPredictor``, one frame at a time from a per-stream cache;
- :mod:`.onnx_export`, :mod:`.onnx_predictor`: the streaming step as ONNX, run with onnxruntime;
- :mod:`.output`: the files of ``arn-lightning infer``, written all or nothing or live;
- :mod:`.attention`: entity-query attention maps.

Submodules are imported on use, so that drawing does not pay for the model's imports.
"""
