# Stepgate gateway image. Build: docker build -t stepgate .
# Run (see docs/operations.md):
#   docker run -p 8080:8080 -v stepgate-data:/data \
#     -e STEPGATE_MASTER_KEY="$(openssl rand -base64 32)" \
#     -e STEPGATE_PUBLIC_URL=https://mfa.example.com stepgate
FROM node:24-slim

# The image runs in production mode: it refuses to start without STEPGATE_MASTER_KEY and an
# https:// STEPGATE_PUBLIC_URL. Pass -e STEPGATE_MODE=development to try it out locally.
ENV NODE_ENV=production \
    STEPGATE_MODE=production \
    STEPGATE_DATA_DIR=/data \
    STEPGATE_HTTP_HOST=0.0.0.0 \
    STEPGATE_HTTP_PORT=8080

WORKDIR /app

# Dependencies first, so code changes do not invalidate this layer. Production dependencies
# only: the `node` devDependency (Node 24 for npm scripts on older machines) is not needed,
# the image's own Node 24 runs the gateway. No dependency needs an install script.
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force

# The code stays owned by root: the gateway's user can read it but not change it.
COPY bin ./bin
COPY config ./config
COPY src ./src
COPY views ./views
COPY public ./public

# The embedded SQLite database (when no STEPGATE_DATABASE_URL is given) and, in development
# mode only, the generated master key live here.
RUN mkdir -p /data && chown node:node /data && chmod 0700 /data
USER node
VOLUME ["/data"]
EXPOSE 8080

# No curl in the slim image: ask /healthz with Node's own fetch.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.STEPGATE_HTTP_PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

# Node is PID 1 and handles SIGTERM itself (graceful shutdown within
# http.shutdownGraceSeconds); `docker stop` waits 10 s by default.
CMD ["node", "bin/stepgate.js", "serve"]
