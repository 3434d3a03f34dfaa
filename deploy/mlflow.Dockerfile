# MLflow tracking server with basic auth and the PostgreSQL driver, at the project's versions.
FROM python:3.11-slim
RUN pip install --no-cache-dir "mlflow[auth]==3.17.2" "psycopg[binary]==3.2.13"
# Add "boto3" for S3 or "google-cloud-storage" for GCS artifact storage.
