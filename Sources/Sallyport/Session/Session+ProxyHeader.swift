import Logging
import NIOCore
import SOCKSProtocol

extension Session {
    /// At accept: only a trusted balancer may speak to a PROXY protocol listener.
    func admitBalancer(_ proxy: ProxyExpectation) -> Bool {
        guard let peer = record.client.flatMap(IPAddress.init), proxy.trusts(peer) else {
            services.logger.notice("connection from outside trusted_proxies closed", metadata: ["peer": "\(record.clientText)"])
            close(.proxyHeaderRefused)
            return false
        }
        return true
    }

    /// Reads the header from the negotiation buffer: false while it is incomplete, or when the
    /// session was closed for it; true once the header's client is the session's client and the
    /// client rules have let it in.
    func readProxyHeader(_ proxy: ProxyExpectation) -> Bool {
        let header: ProxyHeader
        do {
            guard let read = try buffer.readProxyHeader(proxy.version) else { return false }
            header = read
        } catch {
            services.logger.notice("PROXY protocol header refused", metadata: ["peer": "\(record.clientText)", "reason": "\(error)"])
            close(.proxyHeaderRefused)
            return false
        }
        awaitingProxyHeader = nil
        guard let source = header.source, let client = source.socketAddress else {
            close(.proxyLocal)  // the balancer's health check: nothing to serve
            return false
        }
        record.client = client
        return admit()
    }
}
