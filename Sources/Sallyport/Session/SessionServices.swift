import Logging
import NIOCore
import SOCKSProtocol
import SallyportAuth
import SallyportPolicy
import SallyportRelay

/// What every session started under one configuration shares: settings and services. Immutable; a
/// reload makes a new one for the sessions that start after it.
struct SessionServices: Sendable {
    let timeouts: Timeouts
    let limits: Limits
    var egress: Egress
    var authenticator: (any Authenticator)?
    let connector: any OutboundConnecting
    let logger: Logger
    let accessLogger: Logger
    let registry: SessionRegistry
    let limiter: SessionLimiter
    let udp: UDPSettings
    /// One timer wheel per event loop, shared by every configuration's sessions.
    var timers = TimerWheels()
    /// Where sessions, logins and refusals are counted (nil: not counted, as in unit tests).
    var metrics: ServerMetrics? = nil
    /// Count sessions and bytes per user name too.
    var perUserMetrics = false
    /// Where each user's bytes are counted (nil: not counted), and the quotas judged against them.
    var usage: UsageLedger? = nil
    var quotas: [Quota] = []
    /// The TLS contexts of the `socks5+tls` upstreams.
    var upstreamTLS = UpstreamTLSContexts()
    /// BIND's listening sockets, and the relay options their peers' connections get.
    var bind = BindSettings()
    var relay = RelaySettings()

    var policy: CompiledPolicy { egress.compiled }
}

