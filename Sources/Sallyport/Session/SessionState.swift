import NIOCore
import SOCKSProtocol
import SallyportAuth
import SallyportRelay

/// Where a session is, with what it holds there: a value, as NIO's and swift-nio-ssh's state
/// machines are. The one source of truth: no flag or optional elsewhere says it again. Leaving a
/// state gives back what it held and the next one does not carry on (`Holdings`).
enum SessionState {
    /// A PROXY protocol listener: the balancer's header has not been read yet (the negotiation
    /// timer runs from accept).
    case awaitingProxyHeader(ProxyExpectation, timer: TimerWheel.Handle?)
    /// The SOCKS negotiation, up to a complete request; the timer is `timeouts.negotiation`.
    case negotiating(timer: TimerWheel.Handle?)
    /// The credentials are being checked; the waiter tells the checker when the client left.
    case authenticating(LoginWaiter, timer: TimerWheel.Handle?)
    /// The request is being carried out: limits, the egress decision, the dial or the bind.
    case requesting(SessionRequest)
    /// A CONNECT relaying through the shared relay.
    case relaying(RelaySession, grant: SessionLimiter.Grant?)
    /// A UDP association; the request's grant and lookup ticket live on with it.
    case associated(UDPAssociation, SessionRequest)
    /// A failure reply is on its way, or the connection was told to close; nothing is held.
    case closing
    /// The access-log line is written.
    case finished

    /// What a state holds that must be given back when it is left.
    struct Holdings {
        var timer: TimerWheel.Handle?
        var ticket: LookupTicket?
        var waiter: LoginWaiter?
        var grant: SessionLimiter.Grant?
        /// A request still being carried out: told to stop when its session moves on.
        var request: SessionRequest?
    }

    var holdings: Holdings {
        switch self {
        case .awaitingProxyHeader(_, let timer), .negotiating(let timer): return Holdings(timer: timer)
        case .authenticating(let waiter, let timer): return Holdings(timer: timer, waiter: waiter)
        case .requesting(let request), .associated(_, let request):
            return Holdings(ticket: request.ticket, grant: request.grant, request: request)
        case .relaying(_, let grant): return Holdings(grant: grant)
        case .closing, .finished: return Holdings()
        }
    }

    /// Before the request's reply: the negotiation still reads the client's bytes.
    var isNegotiating: Bool {
        switch self {
        case .awaitingProxyHeader, .negotiating, .authenticating, .requesting: return true
        case .relaying, .associated, .closing, .finished: return false
        }
    }

    /// For logs and tests.
    var name: String {
        switch self {
        case .awaitingProxyHeader: return "awaiting_proxy_header"
        case .negotiating: return "negotiating"
        case .authenticating: return "authenticating"
        case .requesting(let request): return "requesting(\(request.step))"
        case .relaying: return "relaying"
        case .associated: return "associated"
        case .closing: return "closing"
        case .finished: return "finished"
        }
    }

    var isOver: Bool {
        switch self {
        case .closing, .finished: return true
        default: return false
        }
    }
}

extension SessionState.Holdings {
    /// Gives back what is held here and not in `kept`: the timer to `wheel`, the grant to `limiter`.
    func release(keeping kept: Self, to limiter: SessionLimiter, wheel: TimerWheel?) {
        if let timer, timer != kept.timer { wheel?.cancel(timer) }
        if let ticket, ticket !== kept.ticket { ticket.cancel() }
        if let waiter, waiter !== kept.waiter { waiter.leave() }
        if let grant, kept.grant == nil { limiter.release(grant) }
        if let request, request !== kept.request { request.abandon() }
    }
}
