# vrouter's image, for those who build with Docker or Buildah:
#
#   docker build --build-arg VERSION=v0.2.0 -t vrouter:v0.2.0 .
#
# `make image` builds the same layout without either, reproducibly (see
# docs/image.md): a static vrouter at /usr/local/bin/vrouter, the
# entrypoint; /run/vrouter for the admin socket; a world-writable /tmp;
# /etc/nsswitch.conf; nothing else — no shell, no C library, no passwd.

ARG VERSION=v0.2.0

FROM golang:1.26 AS build
ARG VERSION
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# .dockerignore leaves .git out, so there is no revision to stamp.
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
        -ldflags "-s -w -buildid= -X main.version=${VERSION}" \
        -o /rootfs/usr/local/bin/vrouter ./cmd/vrouter \
 && mkdir -p /rootfs/run/vrouter /rootfs/tmp /rootfs/etc \
 && chmod 0755 /rootfs/run/vrouter && chmod 1777 /rootfs/tmp \
 && printf 'hosts: files dns\n' > /rootfs/etc/nsswitch.conf

FROM scratch
ARG VERSION
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /
LABEL org.opencontainers.image.title=vrouter \
      org.opencontainers.image.source=https://github.com/vrouter/vrouter \
      org.opencontainers.image.version=${VERSION}
ENTRYPOINT ["/usr/local/bin/vrouter"]
