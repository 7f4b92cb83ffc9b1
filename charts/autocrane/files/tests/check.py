"""`helm test`: the install answers as it should, from inside the cluster (standard library only).

1. The data repository is ready and serves its manifest to anyone (datadeployers read it unauthenticated).
2. A write without the token is refused (401): only the controller may set last known goods.
3. The injector, over TLS verified with the CA the API server trusts, injects a pod that declares data.
Each check prints one line; the first failure ends the test with exit 1.
"""

import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.request

TIMEOUT = 10


def check(what, ok, detail=""):
    print(("ok    " if ok else "FAIL  ") + what + (f": {detail}" if detail else ""), flush=True)
    if not ok:
        sys.exit(1)


def call(url, *, method="GET", body=None, context=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def repository(url, sources):
    status, _ = call(f"{url}/readyz")
    check(f"the data repository is ready ({url}/readyz)", status == 200, f"HTTP {status}")
    status, body = call(f"{url}/v1/manifest")
    served = sorted(json.loads(body).get("sources", {})) if status == 200 else []
    check("its manifest is open to read and lists every source", status == 200 and set(sources) <= set(served),
          f"HTTP {status}, sources {served}, configured {sources}")
    source = sources[0] if sources else "helm-test"
    status, _ = call(f"{url}/v1/sources/{source}/last-known-good", method="PUT", body={"version": "x"})
    check("a write without the token is refused", status == 401, f"HTTP {status}")


def injector(service, namespace, ca_file):
    context = ssl.create_default_context(cafile=ca_file)
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "helm-test", "namespace": "helm-test",
                        "annotations": {"data.autocrane.io/sample": "helm-test"}},
           "spec": {"containers": [{"name": "app", "image": "app"}]}}
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "helm-test", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "helm-test",
        "operation": "CREATE", "object": pod, "dryRun": True}}
    url = f"https://{service}.{namespace}.svc:443/mutate"
    try:
        status, body = call(url, method="POST", body=review, context=context)
    except (OSError, ssl.SSLError) as error:
        check(f"the injector answers over TLS verified with its CA ({url})", False, str(error))
    response = json.loads(body).get("response", {}) if status == 200 else {}
    check(f"the injector answers over TLS verified with its CA ({url})", status == 200, f"HTTP {status}")
    patch = base64.b64decode(response.get("patch", "")).decode() if response.get("patch") else ""
    check("it injects a pod that declares a data set", response.get("allowed") is True
          and "autocrane-datadeployer" in patch, json.dumps(response)[:300])


def main():
    if os.environ.get("REPOSITORY_URL"):
        repository(os.environ["REPOSITORY_URL"], json.loads(os.environ.get("SOURCES", "[]")))
    injector(os.environ["WEBHOOK_SERVICE"], os.environ["NAMESPACE"], "/etc/autocrane-test/ca/ca.crt")
    print("every check passed")


main()
