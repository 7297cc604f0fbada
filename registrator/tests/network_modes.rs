//! Every Docker network mode against the real engine and a real Consul agent: host network,
//! several networks (with and without `--network`), `container:<id>` and `none`. Each container is
//! either registered where it is reached, or skipped with one INFO line that names it and says why.
//!
//! The containers only `sleep`; nothing here sends traffic to them. Registrations carry no check.
//! Several registrators with different `--hostname`s share one Consul agent per test: each owns
//! only its own registrations, so their results sit side by side. They see every container of
//! the engine; the assertions look only at this test's.

mod support;

use support::{
    docker, ip_on, registrator, require_docker, said_once, test_image, wait_registered, Consul, Container, Image,
    Network,
};

/// Unique names per test run: `regnet-<pid>-<what>`.
fn name(what: &str) -> String {
    format!("regnet-{}-{what}", std::process::id())
}

/// Hostnames (service ID prefix and owner mark) per registrator; never looked up.
fn host(what: &str) -> String {
    format!("regnet{}{what}", std::process::id())
}

fn absent(consul: &Consul, id: &str) {
    let services = consul.agent_services().expect("agent services");
    assert!(!services.contains_key(id), "{id} should not be registered: {:?}", services.get(id));
}

#[test]
fn host_network_registers_container_ports_at_the_host_address() {
    require_docker();
    let image = test_image();
    let consul = Consul::start();
    // The input, as it was given.
    let hostnet = Container::run(
        &name("hostnet"),
        &["--net=host", "-p", "24120:24120", "-e", "SERVICE_NAME=hostnet", &image, "sleep", "600"],
    );
    let exposed = Container::run(
        &name("exposed"),
        &["--net=host", "--expose", "24122", "-e", "SERVICE_NAME=hostnet-exposed", &image, "sleep", "600"],
    );
    // Docker ignores the host side of -p in host mode: the process listens on 24126.
    let remapped = Container::run(
        &name("remapped"),
        &["--net=host", "-p", "24125:24126", "-e", "SERVICE_NAME=hostnet-remapped", &image, "sleep", "600"],
    );
    let (published, internal, no_ip) = (host("pub"), host("int"), host("noip"));
    let reg = registrator(&consul, &["--ip", "127.0.0.1", "--hostname", &published, "--resync", "1s"]);
    let _reg_int =
        registrator(&consul, &["--internal", "--ip", "127.0.0.1", "--hostname", &internal, "--resync", "1s"]);
    // With --hostname and no --ip there is no host address: skipped, and said why.
    let reg_no_ip = registrator(&consul, &["--hostname", &no_ip, "--resync", "1s"]);

    for h in [&published, &internal] {
        for (c, svc_name, port) in
            [(&hostnet, "hostnet", 24120), (&exposed, "hostnet-exposed", 24122), (&remapped, "hostnet-remapped", 24126)]
        {
            let svc = wait_registered(&consul, &format!("{h}:{}:{port}", c.name));
            assert_eq!(svc["Service"], svc_name, "{svc}");
            assert_eq!(svc["Address"], "127.0.0.1", "{svc}");
            assert_eq!(svc["Port"], port, "{svc}");
        }
    }
    absent(&consul, &format!("{published}:{}:24125", remapped.name));
    said_once(&reg, &remapped.name, "Docker ignores -p 24125:24126; port 24126 is registered", 2);
    said_once(
        &reg_no_ip,
        &hostnet.name,
        "not registered: network mode host: no host address to advertise (set --ip)",
        0,
    );
    absent(&consul, &format!("{no_ip}:{}:24120", hostnet.name));
}

#[test]
fn several_networks_use_the_start_network_or_the_one_named() {
    require_docker();
    let image = test_image();
    // Started on "z", connected to "a" afterwards: the start network must win over name order.
    let net_z = Network::create(&name("z"));
    let net_a = Network::create(&name("a"));
    let multi = Container::run(
        &name("multi"),
        &["--network", &net_z.name, "--expose", "3000", "-e", "SERVICE_NAME=multinet", &image, "sleep", "600"],
    );
    docker(&["network", "connect", &net_a.name, &multi.name]).expect("network connect");
    let (ip_z, ip_a) = (ip_on(&multi.name, &net_z.name), ip_on(&multi.name, &net_a.name));
    assert!(!ip_z.is_empty() && !ip_a.is_empty() && ip_z != ip_a, "{ip_z} / {ip_a}");
    let missing = name("missing");

    let consul = Consul::start();
    let (dflt, on_a, elsewhere) = (host("dflt"), host("ona"), host("miss"));
    let reg = registrator(&consul, &["--internal", "--hostname", &dflt, "--resync", "1s"]);
    let reg_a = registrator(&consul, &["--internal", "--network", &net_a.name, "--hostname", &on_a, "--resync", "1s"]);
    let reg_missing =
        registrator(&consul, &["--internal", "--network", &missing, "--hostname", &elsewhere, "--resync", "1s"]);

    let svc = wait_registered(&consul, &format!("{dflt}:{}:3000", multi.name));
    assert_eq!((&svc["Address"], &svc["Port"]), (&ip_z.clone().into(), &3000.into()), "{svc}");
    let svc = wait_registered(&consul, &format!("{on_a}:{}:3000", multi.name));
    assert_eq!(svc["Address"], ip_a.as_str(), "{svc}");

    let note = format!(
        "on networks {}, {}: registered with its IP on {} (the network it was started on); --network picks another",
        net_a.name, net_z.name, net_z.name
    );
    said_once(&reg, &multi.name, &note, 2);
    let skip = format!("not registered: not on network {missing} (--network), only on {}, {}", net_a.name, net_z.name);
    said_once(&reg_missing, &multi.name, &skip, 0);
    absent(&consul, &format!("{elsewhere}:{}:3000", multi.name));
    assert!(!reg_a.log_text().contains(&format!("{} (the network", net_z.name)), "--network was given: no note");
}

#[test]
fn container_mode_is_registered_where_the_namespace_owner_is() {
    require_docker();
    let base = test_image();
    // Docker refuses --expose with container:<id>; an image's EXPOSE is how such a port is declared.
    let image = Image::build(&name("expose"), &format!("FROM {base}\nEXPOSE 24130\n"));
    let owner = Container::run(&name("owner"), &["-p", "127.0.0.1::24130", &base, "sleep", "600"]);
    let joiner = Container::run(
        &name("joiner"),
        &["--network", &format!("container:{}", owner.name), "-e", "SERVICE_NAME=sidecar", &image.tag, "sleep", "600"],
    );
    let host_port: u16 = docker(&["port", &owner.name, "24130/tcp"])
        .expect("docker port")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("host port");

    let consul = Consul::start();
    let (internal, published) = (host("int"), host("pub"));
    let reg = registrator(&consul, &["--internal", "--hostname", &internal, "--resync", "1s"]);
    let _reg_pub = registrator(&consul, &["--hostname", &published, "--resync", "1s"]);

    let id = format!("{internal}:{}:24130", joiner.name);
    let svc = wait_registered(&consul, &id);
    assert_eq!(svc["Service"], "sidecar", "{svc}");
    assert_eq!((&svc["Address"], &svc["Port"]), (&owner.ip().into(), &24130.into()), "{svc}");
    let svc = wait_registered(&consul, &format!("{published}:{}:24130", joiner.name));
    assert_eq!((&svc["Address"], &svc["Port"]), (&"127.0.0.1".into(), &host_port.into()), "{svc}");
    said_once(&reg, &joiner.name, &format!("shares the network of container {}: registered where", owner.name), 1);

    // The owner stops; the joiner keeps running in a namespace nobody can reach any more.
    docker(&["kill", &owner.name]).expect("kill owner");
    support::wait_for(std::time::Duration::from_secs(10), "the joiner's registration to go", || {
        (!consul.agent_services()?.contains_key(&id)).then_some(())
    });
    let why = format!("not registered: shares the network of container {}, which is not running", owner.name);
    said_once(&reg, &joiner.name, &why, 2);
}

#[test]
fn none_network_is_skipped_with_an_info_line() {
    require_docker();
    let image = test_image();
    let nonet = Container::run(
        &name("none"),
        &["--network", "none", "--expose", "24140", "-e", "SERVICE_NAME=nonet", &image, "sleep", "600"],
    );
    let consul = Consul::start();
    let (internal, published) = (host("int"), host("pub"));
    let reg = registrator(&consul, &["--internal", "--hostname", &internal, "--resync", "1s"]);
    let reg_pub = registrator(&consul, &["--ip", "127.0.0.1", "--hostname", &published, "--resync", "1s"]);
    let why = "not registered: network mode none: no address to register";
    said_once(&reg, &nonet.name, why, 2);
    said_once(&reg_pub, &nonet.name, why, 0);
    for h in [internal, published] {
        absent(&consul, &format!("{h}:{}:24140", nonet.name));
    }
}
