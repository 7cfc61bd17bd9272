# Stand-in for nginx:1.27, built only where no registry can be reached: Debian bookworm's
# nginx-light (1.22; every directive deploy/nginx/pirloop.conf uses is older). As in the
# official image: Debian's nginx.conf includes /etc/nginx/conf.d/*.conf inside `http {}`, where
# docker-compose.yml mounts the front as default.conf; Debian's own default site is removed
# (it would be the default server on port 80 and take the requests); logs go to the
# container's output; curl is there for the healthcheck (in the base's packages); SIGQUIT
# stops it gracefully.
ARG BASE=pirloop-standin/debian:bookworm
FROM ${BASE}
RUN rm -f /etc/nginx/sites-enabled/default \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
