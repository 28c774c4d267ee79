// warrenctl: the Warren command line. Wiring only; each command lives in its
// own file (dev_ca.cpp ...).
#include <CLI/CLI.hpp>
#include <iostream>

#include "dev_ca.h"

namespace {

using warren::Result;

int report(const Result<void>& r) {
  if (r.ok()) return 0;
  std::cerr << "warrenctl: " << r.error().message << "\n";
  return 1;
}

void add_dev_ca(CLI::App& app, int* rc) {
  using namespace warren::cli;
  CLI::App* dev = app.add_subcommand(
      "dev-ca",
      "Development certificate authority: a root in files and the workload identities "
      "warren-node loads from <dir>/<namespace>/<service-account>/{cert-chain.pem,key.pem}. "
      "Not for production.");
  dev->require_subcommand(1);

  static DevCaInitOptions init;
  CLI::App* i = dev->add_subcommand(
      "init", "Create a root CA: DIR/root-cert.pem, DIR/root-key.pem (0600), DIR/trust-domain.");
  i->add_option("--out", init.out, "CA directory")->required();
  i->add_option("--trust-domain", init.trust_domain, "SPIFFE trust domain")->capture_default_str();
  i->add_option("--days", init.days, "root lifetime in days")->capture_default_str();
  i->add_flag("--force", init.force, "replace an existing CA in DIR");
  i->callback([rc] { *rc = report(dev_ca_init(init, std::cout)); });

  static DevCaIssueOptions issue;
  CLI::App* is = dev->add_subcommand(
      "issue", "Issue one workload identity: <out>/<ns>/<sa>/cert-chain.pem and key.pem (0600).");
  is->add_option("--ca", issue.ca_dir, "CA directory (from dev-ca init)")->required();
  is->add_option("--namespace,-n", issue.ns, "Kubernetes namespace")->required();
  is->add_option("--service-account,-s", issue.sa, "service account")->required();
  is->add_option("--out", issue.out, "output directory (default: the CA directory)");
  is->add_option("--hours", issue.hours, "certificate lifetime in hours")->capture_default_str();
  is->add_option("--trust-domain", issue.trust_domain,
                 "trust domain (default: the CA's, else cluster.local)");
  is->add_option("--not-before", issue.not_before,
                 "start of validity, RFC 3339 or unix seconds (tests: future certificates)")
      ->group("Testing");
  is->add_option("--not-after", issue.not_after,
                 "end of validity, RFC 3339 or unix seconds (tests: expired certificates)")
      ->group("Testing");
  is->add_option("--spiffe-id", issue.spiffe_id,
                 "put this URI in the certificate instead of the namespace/service-account id "
                 "(tests: wrong identities)")
      ->group("Testing");
  is->callback([rc] { *rc = report(dev_ca_issue(issue, std::cout)); });

  static DevCaIssueConfigOptions cfg;
  CLI::App* ic = dev->add_subcommand(
      "issue-config",
      "Issue one identity per distinct (namespace, serviceAccount) of the HBONE workloads "
      "of a node config JSON, in its trustDomain.");
  ic->add_option("--ca", cfg.ca_dir, "CA directory (from dev-ca init)")->required();
  ic->add_option("--config", cfg.config, "node config JSON")->required();
  ic->add_option("--out", cfg.out, "output directory (default: the CA directory)");
  ic->add_option("--hours", cfg.hours, "certificate lifetime in hours")->capture_default_str();
  ic->callback([rc] { *rc = report(dev_ca_issue_config(cfg, std::cout)); });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "warrenctl: command line for Warren, a sidecarless service mesh.\n"
      "  warrenctl dev-ca init --out DIR                  create a development root CA\n"
      "  warrenctl dev-ca issue --ca DIR -n NS -s SA      issue a workload certificate\n"
      "  warrenctl dev-ca issue-config --ca DIR --config node.json\n"
      "Run `warrenctl <command> --help` for details.",
      "warrenctl"};
  app.require_subcommand(1);
  int rc = 0;
  add_dev_ca(app, &rc);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return rc;
}
