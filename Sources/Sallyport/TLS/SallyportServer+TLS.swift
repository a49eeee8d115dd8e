extension SallyportServer {
    /// Reads every listener's TLS files; their warnings join the configuration's, the expiry
    /// dates go to the metrics.
    func loadTLS(_ configuration: inout ServerConfiguration) throws -> TLSFiles {
        do {
            let tls = TLSFiles(
                listeners: try ServerTLS.loadAll(configuration, warnings: &configuration.warnings), upstreams: try UpstreamTLSContexts.load(configuration.policy))
            metrics.certificateExpiries(zip(configuration.listeners, tls.listeners).compactMap { listener, tls in
                tls.map { (listener.addressDescription, $0.expiry) }
            })
            return tls
        } catch {
            throw StartupError(description: error.description)
        }
    }
}

extension ServerConfiguration {
    /// Reads every TLS file as a start would (`check-config`): the first that cannot be used, and
    /// what is worth a warning (a key others can read, a certificate near or past its end, an old CRL).
    public func checkTLSFiles() -> (error: String?, warnings: [String]) {
        var warnings: [String] = []
        do {
            _ = try ServerTLS.loadAll(self, warnings: &warnings)
            _ = try UpstreamTLSContexts.load(policy)
            return (nil, warnings)
        } catch {
            return (error.description, warnings)
        }
    }
}
