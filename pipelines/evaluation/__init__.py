"""``raychat eval``: accuracy and pass@k of any model on a task, through the engine actor or any
OpenAI-compatible server (tasks.py says what is asked and how it is judged, backends.py how replies
are generated, report.py how the results show in the run's report, contamination.py whether a data
file is one the model was trained on; the command is pipelines/eval_cmd.py).
"""
