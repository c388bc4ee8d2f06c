# Image of the Airflow components, the local emulators and the sink for
# docker-compose.yaml: the official Airflow image plus this project's pinned
# requirements and package.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root requirements.txt /opt/ml-lifecycle/requirements.txt
RUN pip install --no-cache-dir -r /opt/ml-lifecycle/requirements.txt

COPY --chown=airflow:root pyproject.toml README.md /opt/ml-lifecycle/
COPY --chown=airflow:root plugins /opt/ml-lifecycle/plugins
COPY --chown=airflow:root dags /opt/ml-lifecycle/dags
COPY --chown=airflow:root include /opt/ml-lifecycle/include
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e /opt/ml-lifecycle

ENV ML_LIFECYCLE_CONFIG=/opt/ml-lifecycle/include/config/compose.yaml \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/ml-lifecycle/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/ml-lifecycle/plugins
WORKDIR /opt/ml-lifecycle
