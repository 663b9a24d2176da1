import pytest
from pydantic import SecretStr, ValidationError

from blocks import (
    Application,
    ContainerRegistry,
    DockerHostTarget,
    GitForge,
    KubernetesTarget,
    MlflowServer,
    ObjectStore,
    SshHostTarget,
)

GOOD_STORE = dict(endpoint_url="http://minio.lan:9000", bucket="opsflow-artifacts", access_key_id="AKIAEXAMPLE",
                  secret_access_key="s3cr3t-value-123")


def errors_for(exc: ValidationError) -> dict[str, str]:
    return {".".join(map(str, e["loc"])): e["msg"] for e in exc.errors()}


@pytest.mark.parametrize("field,value,needle", [
    ("endpoint_url", "minio.lan:9000", "not a valid URL"),
    ("endpoint_url", "http://user:pw@minio.lan:9000", "credentials must not be embedded"),
    ("endpoint_url", "http://minio.lan:99999", "invalid port"),
    ("bucket", "Bad_Bucket!", "not a valid name"),
    ("secret_access_key", "", "must not be empty"),
    ("access_key_id", "   ", "must not be empty"),
])
def test_object_store_rejects_bad_fields_naming_the_field(field, value, needle):
    with pytest.raises(ValidationError) as info:
        ObjectStore(**{**GOOD_STORE, field: value})
    errors = errors_for(info.value)
    assert field in errors and needle in errors[field]


def test_secrets_never_show_in_repr_or_json():
    store = ObjectStore(**GOOD_STORE)
    assert "s3cr3t-value-123" not in repr(store)
    assert "s3cr3t-value-123" not in store.model_dump_json()
    assert store.client_kwargs()["aws_secret_access_key"] == "s3cr3t-value-123"


def test_object_store_as_prefect_aws_bucket_keeps_endpoint_and_secret():
    bucket = ObjectStore(**GOOD_STORE).as_s3_bucket()
    assert bucket.bucket_name == "opsflow-artifacts"
    assert bucket.credentials.aws_client_parameters.endpoint_url == "http://minio.lan:9000"
    assert bucket.credentials.aws_secret_access_key.get_secret_value() == "s3cr3t-value-123"


def test_registry_reference_and_credentials_pair():
    reg = ContainerRegistry(url="http://127.0.0.1:5000/", namespace="team")
    assert reg.repository("shop-backend") == "127.0.0.1:5000/team/shop-backend"
    assert reg.auth_config() is None
    with pytest.raises(ValidationError, match="given together"):
        ContainerRegistry(url="https://registry.lan", username="ci")
    with pytest.raises(ValidationError) as info:
        ContainerRegistry(url="https://registry.lan", username="ci", password="")
    assert "password" in errors_for(info.value)
    authed = ContainerRegistry(url="https://registry.lan", username="ci", password="tok-123456")
    assert authed.auth_config() == {"username": "ci", "password": "tok-123456"}
    assert authed.docker_credentials().registry_url == "registry.lan"


def test_forge_requires_a_token_and_known_kind():
    with pytest.raises(ValidationError) as info:
        GitForge(kind="bitbucket", api_url="https://api.example", token="t0ken-abc")
    assert "kind" in errors_for(info.value)
    with pytest.raises(ValidationError) as info:
        GitForge(kind="github", api_url="https://api.github.com", token=" ")
    assert "token" in errors_for(info.value)


def test_mlflow_env_carries_credentials_only_in_env():
    server = MlflowServer(tracking_uri="http://mlflow.lan:5000", username="ml", password="pw-123456")
    env = server.client_env()
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.lan:5000"
    assert env["MLFLOW_TRACKING_PASSWORD"] == "pw-123456"
    assert "pw-123456" not in repr(server)


@pytest.mark.parametrize("url,ok", [
    ("unix:///var/run/docker.sock", True), ("tcp://edge-1.lan:2376", True), ("ssh://deploy@edge-1.lan", True),
    ("ssh://deploy:pw@edge-1.lan", False), ("tcp://u@edge:2376", False),
    ("ssh://edge-1.lan", True), ("edge-1.lan:2376", False), ("unix://", False),
])
def test_docker_host_urls(url, ok):
    if ok:
        assert DockerHostTarget(name="edge-1", base_url=url).base_url == url
    else:
        with pytest.raises(ValidationError):
            DockerHostTarget(name="edge-1", base_url=url)


def test_ssh_and_kubernetes_targets_validate_names():
    with pytest.raises(ValidationError) as info:
        SshHostTarget(name="app-1", hostname="app1.lan; rm -rf /", user="deploy")
    assert "hostname" in errors_for(info.value)
    with pytest.raises(ValidationError) as info:
        KubernetesTarget(name="prod", namespace="Prod NS")
    assert "namespace" in errors_for(info.value)
    assert SshHostTarget(name="app-1", hostname="10.0.0.5", user="deploy", private_key=SecretStr("k" * 20)).port == 22


APP = dict(name="shop", repository="https://git.lan/team/shop.git",
           components=[{"name": "backend", "path": "backend", "build_commands": [["npm", "run", "build"]],
                        "test_command": ["npm", "test"], "junit_report": "reports/junit.xml", "ports": [8080]}])


def test_application_accepts_a_full_definition():
    app = Application(**APP, env_files=[{"secret_block": "shop-env", "path": "backend/.env"}],
                      deploy={"replicas": 2, "cpu": "500m", "memory": "256Mi", "method": "blue-green"})
    assert app.component("backend").build_commands == [["npm", "run", "build"]]
    assert app.deploy.method.value == "blue-green"
    with pytest.raises(KeyError, match="has no component 'frontend'"):
        app.component("frontend")


@pytest.mark.parametrize("change,field", [
    ({"repository": "https://user:token@git.lan/team/shop.git"}, "repository"),
    ({"repository": "not a url"}, "repository"),
    ({"name": "Shop App"}, "name"),
    ({"components": []}, "components"),
    ({"components": [{"name": "api", "path": "../outside"}]}, "components.0.path"),
    ({"components": [{"name": "api", "build_output": "/etc"}]}, "components.0.build_output"),
    ({"components": [{"name": "api", "build_commands": [[]]}]}, "components.0.build_commands.0"),
    ({"components": [{"name": "api", "ports": [0]}]}, "components.0.ports"),
    ({"components": [{"name": "api"}, {"name": "api"}]}, ""),
    ({"deploy": {"replicas": -1}}, "deploy.replicas"),
    ({"deploy": {"memory": "12XB"}}, "deploy.memory"),
    ({"deploy": {"cpu": "0"}}, "deploy.cpu"),
    ({"env_files": [{"secret_block": "env", "path": "a/../../b"}]}, "env_files.0.path"),
])
def test_application_rejects_bad_input_naming_the_field(change, field):
    with pytest.raises(ValidationError) as info:
        Application(**{**APP, **change})
    assert field in errors_for(info.value) or (field == "" and "unique" in str(info.value))


def test_registry_ca_cert_is_a_pem_certificate_and_gc_never_deletes_untagged():
    from opsflow.stack.tls import make_ca

    ca = make_ca("unit test CA").cert_pem
    reg = ContainerRegistry(url="https://registry.lan", ca_cert=ca, gc_command=["sudo", "/usr/local/sbin/registry-gc"])
    assert reg.ca_cert.startswith("-----BEGIN CERTIFICATE-----") and reg.kind == "distribution"
    with pytest.raises(ValidationError) as info:
        ContainerRegistry(url="https://registry.lan", ca_cert="not a certificate")
    assert "not a PEM certificate" in errors_for(info.value)["ca_cert"]
    with pytest.raises(ValidationError) as info:
        ContainerRegistry(url="https://registry.lan",
                          gc_command=["registry", "garbage-collect", "--delete-untagged", "/etc/registry.yml"])
    assert "kept multi-arch images" in errors_for(info.value)["gc_command"]
    with pytest.raises(ValidationError) as info:
        ContainerRegistry(url="https://registry.lan", kind="quay")
    assert "kind" in errors_for(info.value)


def test_application_untrusted_pull_requests_default_to_hold_with_a_label():
    app = Application(name="shop", repository="https://git.lan/o/shop.git", components=[{"name": "web"}])
    assert app.untrusted_prs == "hold" and app.trusted_label == "safe-to-test"
    with pytest.raises(ValidationError) as info:
        Application(name="shop", repository="https://git.lan/o/shop.git", components=[{"name": "web"}],
                    trusted_label="a,b")
    assert "trusted_label" in errors_for(info.value)
