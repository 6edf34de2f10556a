# xmigrate: one image holding xm-api and every worker; docker-compose.yml picks the
# command per service. Built on Debian 12 like the development machines.
FROM debian:12 AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config libhiredis-dev libevent-dev \
        libcurl4-openssl-dev libjansson-dev libssl-dev libzstd-dev libpcre2-dev \
        libxml2-dev libdeflate-dev libyaml-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DXM_WERROR=ON -DXM_TESTS=OFF \
        -DXM_TEST_HOOKS=OFF && cmake --build /build -j"$(nproc)"

FROM debian:12
RUN apt-get update && apt-get install -y --no-install-recommends \
        libhiredis0.14 libevent-2.1-7 libevent-pthreads-2.1-7 libcurl4 libjansson4 \
        libssl3 libzstd1 libpcre2-8-0 libxml2 libdeflate0 libyaml-0-2 ca-certificates \
        ansible-core openssh-client \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 xmigrate
COPY --from=build /build/api/xm-api /build/workers/network/xm-network \
     /build/workers/clone/xm-clone /build/convert/xm-convert \
     /build/workers/import/xm-import /build/cli/xmctl /usr/local/bin/
# The static agent the clone playbook copies to source servers.
COPY --from=build /build/agent/xm-agent /usr/lib/xmigrate/xm-agent
# The prep worker (runs playbooks/prep.yml on the source servers).
COPY --from=build /build/workers/prep/xm-prep /usr/local/bin/
# The discovery worker (runs playbooks/discover.yml; posts facts to XM_API_URL).
COPY --from=build /build/workers/discovery/xm-discovery /usr/local/bin/
COPY schemas /usr/share/xmigrate/schemas
COPY playbooks /usr/share/xmigrate/playbooks
ENV XM_SCHEMAS_DIR=/usr/share/xmigrate/schemas \
    XM_PLAYBOOKS_DIR=/usr/share/xmigrate/playbooks \
    XM_AGENT_PATH=/usr/lib/xmigrate/xm-agent
USER xmigrate
