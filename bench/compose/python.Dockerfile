# Stand-in for python:3.11-slim, built only where no registry can be reached: Debian
# bookworm's Python 3.11 in a virtual environment on PATH, so `python` and `pip` behave as in
# the official image (installs go to the environment, not to Debian's packages).
ARG BASE=pirloop-standin/debian:bookworm
FROM ${BASE}
RUN python3 -m venv /usr/local/python
ENV PATH=/usr/local/python/bin:$PATH \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    LANG=C.UTF-8
CMD ["python3"]
