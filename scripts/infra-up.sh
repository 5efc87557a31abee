#!/usr/bin/env bash
# Make sure PostgreSQL (5432), Redis (6379) and RabbitMQ (5672) answer on loopback.
# Local servers that are installed but down are started; otherwise, where a Docker engine runs,
# `docker compose up -d` starts the infrastructure containers. Exits non-zero if one stays down.
set -uo pipefail
cd "$(dirname "$0")/.."

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds
  local deadline=$((SECONDS + $2))
  until port_open "$1"; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.5
  done
}

start_postgres() {
  command -v pg_ctlcluster >/dev/null 2>&1 || return 1
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
}

start_redis() {
  command -v redis-server >/dev/null 2>&1 || return 1
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
}

start_rabbitmq() {
  command -v rabbitmq-server >/dev/null 2>&1 || return 1
  rabbitmq-server -detached && rabbitmqctl -q await_startup
}

docker_available() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

status=0
for entry in "postgresql 5432 start_postgres" "redis 6379 start_redis" "rabbitmq 5672 start_rabbitmq"; do
  set -- $entry
  name=$1 port=$2 starter=$3
  if port_open "$port"; then continue; fi
  echo "infra: $name is down on :$port, starting it" >&2
  if $starter >/dev/null 2>&1 && wait_port "$port" 60; then continue; fi
  if docker_available; then
    docker compose up -d postgres redis rabbitmq && wait_port "$port" 90 && continue
  fi
  echo "infra: could not start $name on :$port" >&2
  status=1
done
exit $status
