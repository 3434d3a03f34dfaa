-- The basic-auth app's user store lives in its own database next to the runs.
CREATE DATABASE mlflow_auth OWNER mlflow;
