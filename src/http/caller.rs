//! Who is calling the API and whether they may: the prologue every protected route shares, as
//! extractors, so a handler receives a caller already admitted and does only its own work.
//!
//! In order, as each route has always answered: the open-mode `Host` rule
//! ([`AccessPolicy::check_open_request`]), the `{project_id}` of the path, the caller's principal
//! ([`ApiCaller::identify`]), then the policy's verdict on the route's action. Each refusal is a
//! [`Refusal`], which renders itself in the protocol's error shape. The project is checked for
//! its form only, never looked up, so no refusal tells whether a project exists.
//!
//! Put these extractors last in a handler's arguments: actix extracts in order, and a malformed
//! query string has always been answered before the caller is looked at.
//!
//! [`AccessPolicy::check_open_request`]: crate::access::AccessPolicy::check_open_request

use std::{future::Future, marker::PhantomData, pin::Pin};

use actix_web::{
    dev::Payload,
    http::{header, StatusCode},
    web, FromRequest, HttpRequest,
};

use super::{authorization, client_address, header_str, Refusal};
use crate::{
    access::{AccessPolicy, Action, LocalCallerRefusal, Principal},
    gateway::Gateway,
    metrics::Metrics,
    protocol::{
        request::{validate_project_id, ParseLimits, ProjectId},
        ErrorCode, RequestError,
    },
};

/// The open-mode Host rule for a request without a body: without PUBLISH_API_KEYS the API
/// answers only requests addressed to a loopback name (403 otherwise).
pub(crate) fn check_host(request: &HttpRequest, policy: &AccessPolicy) -> Result<(), Refusal> {
    policy
        .check_open_request(header_str(request, header::HOST), None, false)
        .map_err(|refusal| Refusal::new(refusal.to_request_error(), StatusCode::FORBIDDEN))
}

/// The caller of an API request, identified by its credential (a publish key or a token in
/// `Authorization`), or admitted without one as this machine's own caller. As an extractor it
/// checks the Host rule first ([`check_host`]).
pub(crate) struct ApiCaller {
    pub principal: Principal,
}

impl ApiCaller {
    /// The caller's principal, or the refusal to answer: 401 when its token does not verify;
    /// without a credential, where only this machine's callers are served
    /// ([`AccessPolicy::admit_local_caller`]: protected mode covers every route that reads or
    /// writes project data), 401 from the network and 403 for a name that is not loopback.
    ///
    /// [`AccessPolicy::admit_local_caller`]: crate::access::AccessPolicy::admit_local_caller
    pub(crate) async fn identify(
        request: &HttpRequest,
        policy: &AccessPolicy,
        metrics: &Metrics,
    ) -> Result<Self, Refusal> {
        let principal = policy.authenticate(authorization(request), None).await.map_err(|error| {
            metrics.auth_failures.with_label_values(&[error.label()]).inc();
            RequestError::new(ErrorCode::Unauthorized, format!("Invalid token: {error}"))
        })?;
        if principal.is_anonymous() {
            let host = header_str(request, header::HOST);
            policy.admit_local_caller(host, client_address(request, policy)).map_err(|refusal| {
                let status = match refusal {
                    LocalCallerRefusal::FromNetwork => StatusCode::UNAUTHORIZED,
                    LocalCallerRefusal::Host => StatusCode::FORBIDDEN,
                };
                Refusal::new(refusal.to_request_error(), status)
            })?;
        }
        Ok(ApiCaller { principal })
    }

    /// The policy's verdict on `action` for this caller, as an access refusal (401 or 403).
    pub(crate) fn authorize(&self, policy: &AccessPolicy, action: Action<'_>) -> Result<(), Refusal> {
        policy.check(&self.principal, action).map_err(|error| Refusal::access(error, &self.principal))
    }
}

impl FromRequest for ApiCaller {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            let gateway = gateway(&request)?;
            check_host(&request, &gateway.policy)?;
            Ok(ApiCaller::identify(&request, &gateway.policy, &gateway.metrics).await?)
        })
    }
}

/// What a route under `/projects/{project_id}` does to the project: the [`Action`] the policy
/// rules on.
pub(crate) trait ProjectAction {
    fn action(project_id: &str) -> Action<'_>;
}

/// Reading a project's audit records.
pub(crate) struct ReadAudit;
/// Reading a project's publication history.
pub(crate) struct ReadHistory;
/// Reading who is subscribed to a project.
pub(crate) struct ReadPresence;
/// Publishing to a project (its agent streams).
pub(crate) struct PublishTo;
/// Deciding a project's approval requests.
pub(crate) struct DecideFor;

impl ProjectAction for DecideFor {
    fn action(project_id: &str) -> Action<'_> {
        Action::Decide { project_id }
    }
}

impl ProjectAction for PublishTo {
    fn action(project_id: &str) -> Action<'_> {
        Action::Publish { project_id }
    }
}

impl ProjectAction for ReadAudit {
    fn action(project_id: &str) -> Action<'_> {
        Action::ReadAudit { project_id }
    }
}

impl ProjectAction for ReadHistory {
    fn action(project_id: &str) -> Action<'_> {
        Action::ReadHistory { project_id }
    }
}

impl ProjectAction for ReadPresence {
    fn action(project_id: &str) -> Action<'_> {
        Action::ReadPresence { project_id }
    }
}

/// A request to a route under `/projects/{project_id}` whose caller may do `A` to that project:
/// the Host rule, the project id's form, the caller and the policy's verdict, in that order.
pub(crate) struct ProjectRequest<A> {
    pub project_id: ProjectId,
    /// Who asked (for budgets and the audit).
    pub caller: ApiCaller,
    action: PhantomData<A>,
}

impl<A: ProjectAction> ProjectRequest<A> {
    /// The prologue for `path_project_id`, the `{project_id}` segment as the path gave it.
    async fn admit(
        request: &HttpRequest,
        path_project_id: &str,
        policy: &AccessPolicy,
        metrics: &Metrics,
        limits: ParseLimits,
    ) -> Result<Self, Refusal> {
        check_host(request, policy)?;
        let project_id = validate_project_id(path_project_id, limits)?;
        let caller = ApiCaller::identify(request, policy, metrics).await?;
        caller.authorize(policy, A::action(&project_id))?;
        Ok(ProjectRequest { project_id, caller, action: PhantomData })
    }
}

impl<A: ProjectAction + 'static> FromRequest for ProjectRequest<A> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            // By name: a route may have more segments after it (`.../streams/{stream_id}`).
            let path = request.match_info().get("project_id").unwrap_or_default().to_owned();
            let gateway = gateway(&request)?;
            let (policy, metrics, limits) = (&gateway.policy, &gateway.metrics, gateway.session.parse_limits);
            Ok(ProjectRequest::admit(&request, &path, policy, metrics, limits).await?)
        })
    }
}

/// A caller who may read the operators' figures: anyone on the internal port (INTERNAL_PORT, the
/// operators' own network), otherwise an [`ApiCaller`] the policy admits as an operator
/// ([`AccessPolicy::check_operator`]).
pub(crate) struct Operator;

impl FromRequest for Operator {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if super::ports::is_internal(request) {
            return Box::pin(std::future::ready(Ok(Operator)));
        }
        let caller = ApiCaller::from_request(request, payload);
        let request = request.clone();
        Box::pin(async move {
            let caller = caller.await?;
            let policy = &gateway(&request)?.policy;
            policy.check_operator(&caller.principal).map_err(|error| Refusal::access(error, &caller.principal))?;
            Ok(Operator)
        })
    }
}

/// The shared state, registered on the app by the server ([`crate::server`]).
fn gateway(request: &HttpRequest) -> Result<web::Data<Gateway>, actix_web::Error> {
    request
        .app_data::<web::Data<Gateway>>()
        .cloned()
        .ok_or_else(|| actix_web::error::ErrorInternalServerError("the gateway is not registered on the app"))
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    const LIMITS: ParseLimits = ParseLimits { max_project_id_bytes: 64 };
    const LOOPBACK_ONLY: bool = true;
    const LOCAL: (&str, &str) = ("host", "localhost:8080");

    /// The refusal of an audit read of `project_id` by a request with these headers, if any.
    async fn refusal(policy: &AccessPolicy, project_id: &str, headers: &[(&str, &str)]) -> Option<(u16, ErrorCode)> {
        let request = headers.iter().fold(TestRequest::default(), |request, header| request.insert_header(*header));
        let metrics = Metrics::new().expect("the metrics register");
        let request = request.to_http_request();
        let admitted = ProjectRequest::<ReadAudit>::admit(&request, project_id, policy, &metrics, LIMITS);
        admitted.await.err().map(|refusal| (refusal.status.as_u16(), refusal.error.code))
    }

    #[actix_web::test]
    async fn the_host_rule_comes_before_the_project_id_and_the_caller() {
        let open = AccessPolicy::new(vec![], LOOPBACK_ONLY, 10);
        let foreign = [("host", "evil.example")];
        assert_eq!(refusal(&open, "p", &foreign).await, Some((403, ErrorCode::Forbidden)));
        assert_eq!(refusal(&open, "", &foreign).await, Some((403, ErrorCode::Forbidden)));
        assert_eq!(refusal(&open, "p", &[LOCAL]).await, None);
    }

    #[actix_web::test]
    async fn a_malformed_project_id_is_refused_alike_whoever_asks() {
        let keyed = AccessPolicy::new(vec!["k1".into()], LOOPBACK_ONLY, 10);
        let malformed = "p\u{202e}";
        for authorization in [None, Some("Bearer nope"), Some("Bearer k1")] {
            let headers: Vec<_> =
                [Some(LOCAL), authorization.map(|value| ("authorization", value))].into_iter().flatten().collect();
            assert_eq!(refusal(&keyed, malformed, &headers).await, Some((400, ErrorCode::InvalidProjectId)));
        }
    }

    #[actix_web::test]
    async fn with_keys_the_caller_needs_one_and_every_project_is_refused_alike() {
        let keyed = AccessPolicy::new(vec!["k1".into()], LOOPBACK_ONLY, 10);
        for project_id in ["exists", "never-created"] {
            assert_eq!(refusal(&keyed, project_id, &[LOCAL]).await, Some((401, ErrorCode::Forbidden)));
            let wrong_key = [LOCAL, ("authorization", "Bearer k2")];
            assert_eq!(refusal(&keyed, project_id, &wrong_key).await, Some((401, ErrorCode::Forbidden)));
            assert_eq!(refusal(&keyed, project_id, &[LOCAL, ("authorization", "bearer k1")]).await, None);
        }
    }
}
