import NIOCore
import SOCKSProtocol
import SallyportPolicy

/// Who gets in, beside the configuration: the connections each client holds from accept, and this
/// host's own addresses, which the guard keeps closed.
extension SallyportServer {
    /// Counts an accepted connection against its client's `connections_per_client`; false when
    /// it is over (the caller closes it), with a notice at most once per interval.
    func admit(_ channel: any Channel, limit: Int) -> Bool {
        let client = ClientNetwork(channel.remoteAddress)
        switch gate.admit(client, limit: limit) {
        case .admitted:
            channel.closeFuture.whenComplete { [gate] _ in gate.leave(client) }
            return true
        case .refused(let line):
            metrics.connectionRefused(reason: "per_client")
            if let line {
                logger.notice(
                    "connections closed at accept: a client holds its limit", metadata: [
                        "client": "\(line.client)", "closed": "\(line.refused)", "limit": "limits.connections_per_client = \(limit)",
                    ])
            }
            return false
        }
    }

    /// Judges new sessions with `addresses` as this host's own (special to the guard), when they
    /// differ from those in use; running sessions keep what they were allowed.
    func takeHostAddresses(_ addresses: Set<IPAddress>) {
        generation.withLockedValue { generation in
            guard generation.services.egress.compiled.policy.hostAddresses != addresses else { return }
            var policy = generation.services.egress.compiled.policy
            policy.hostAddresses = addresses
            let egress = Egress(policy: policy, resolver: resolver)
            generation.services.egress = egress
            for index in generation.listeners.indices { generation.listeners[index].services.egress = egress }
        }
    }

    /// This host's own addresses but loopback (which the guard holds anyway), read at start, on
    /// every reload and every 30 s: a CONNECT to them would reach services bound to the wildcard.
    static func hostAddresses() -> Set<IPAddress> {
        let devices = (try? System.enumerateDevices()) ?? []
        return Set(devices.compactMap { $0.address.flatMap(IPAddress.init)?.unmapped }.filter { !$0.isLoopback })
    }
}
