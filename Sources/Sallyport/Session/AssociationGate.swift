import Logging
import NIOCore
import SOCKSProtocol
import SallyportPolicy
import SallyportRelay

/// The egress path for one UDP association's destinations: the session's subject, client and
/// lookups, each destination decided once by the association, refusals logged in aggregate.
/// Lives on the session's event loop.
final class AssociationGate {
    private let egress: Egress
    private let subject: PolicySubject
    private let client: ClientNetwork
    private let ticket: LookupTicket?
    private var refusals: RefusalNotice
    private let session: String
    private let clientText: String

    init(egress: Egress, subject: PolicySubject, ticket: LookupTicket?, record: SessionRecord, logger: Logger) {
        self.egress = egress
        self.subject = subject
        self.client = ClientNetwork(record.client)
        self.ticket = ticket
        self.refusals = RefusalNotice(logger: logger)
        self.session = record.idText
        self.clientText = record.clientText
    }

    /// Where one destination's datagrams may go.
    func answer(_ endpoint: SOCKSEndpoint, on eventLoop: any EventLoop) -> EventLoopFuture<UDPGateAnswer> {
        egress.route(endpoint, command: .udpAssociate, subject: subject, client: client, ticket: ticket, on: eventLoop)
            .assumeIsolated()
            .map { [self] decision in
                let (answer, refusal) = decision.udpGate(egress)
                if let refusal {
                    refusals.refused(
                        "udp destinations refused", endpoint, reason: refusal, command: .udpAssociate, session: session, user: subject.user,
                        client: clientText)
                }
                return answer
            }
            .nonisolated()
    }
}
