vcl 4.1;
# The storefront's edge cache (docs/local-stack.md, README "The edge cache"): in front of HAProxy's production
# frontend. Cacheable answers carry `Surrogate-Key` (e.g. `content price product:sku-1`); releasegate bans by key
# through the owner-only management CLI (secret in .run/secrets/varnish/secret), never over HTTP: a PURGE or BAN
# request from anyone is refused here, so only the holder of the secret can change what the edge holds.
# deploy/components/varnish.sh renders the origin's host and port into the backend below (EDGE_ORIGIN of
# varnish.params); docker-compose.yml renders the haproxy service there.

backend origin {
    .host = "@ORIGIN_HOST@";
    .port = "@ORIGIN_PORT@";
    .connect_timeout = 2s;
    .first_byte_timeout = 10s;
}

sub vcl_recv {
    if (req.method == "PURGE" || req.method == "BAN" || req.method == "REFRESH") {
        return (synth(405, "purges go through the authenticated management channel"));
    }
    # what a client says the cache should do is never trusted
    unset req.http.X-Edge-Cache;
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # canary cookie holders are sent to the candidate by HAProxy: their answers are theirs, not the edge's
    if (req.http.Cookie ~ "rg_canary=") {
        return (pass);
    }
    unset req.http.Cookie;
    unset req.http.Authorization;
    return (hash);
}

sub vcl_hash {
    # the catalog and the price pages are the same for every tenant (products have no tenant): one copy each,
    # whatever Host named the tenant
    hash_data(req.url);
    return (lookup);
}

sub vcl_backend_response {
    # only what the storefront marked cacheable (Cache-Control public + a surrogate key) is kept
    if (beresp.status != 200 || !beresp.http.Surrogate-Key || beresp.http.Cache-Control !~ "public"
        || beresp.http.Set-Cookie) {
        set beresp.uncacheable = true;
        set beresp.ttl = 120s;
        return (deliver);
    }
    # Surrogate-Control (if any) decides the edge's TTL; otherwise Cache-Control's max-age does
    return (deliver);
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Edge-Cache = "hit";
    } else {
        set resp.http.X-Edge-Cache = "miss";
    }
    # the keys are the edge's business: a client never learns them
    unset resp.http.Surrogate-Key;
    unset resp.http.Surrogate-Control;
}
