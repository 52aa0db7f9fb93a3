use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::m20261123_000001_create_projects::Projects;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// People who log in: e-mail (lower case, unique), argon2id hash, whether
/// they administer the instance, whether they may log in.
#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
    Email,
    PasswordHash,
    Admin,
    Active,
    CreatedAt,
    UpdatedAt,
    LastLoginAt,
}

/// An account's role in a project: `owner`, `member` or `viewer`.
#[derive(DeriveIden)]
enum ProjectMembers {
    Table,
    ProjectId,
    AccountId,
    Role,
    CreatedAt,
}

/// A login: the family of refresh tokens it rotates through. Revoking it
/// (logout, reuse of a spent refresh token, deactivation) ends every token
/// of the family, access tokens included.
#[derive(DeriveIden)]
enum AuthSessions {
    Table,
    Id,
    AccountId,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
    RevokedReason,
}

/// Refresh tokens, by SHA-256; `used_at` set when rotated.
#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    TokenHash,
    SessionId,
    ExpiresAt,
    UsedAt,
}

/// Single-use WebSocket tickets, by SHA-256; deleted when used.
#[derive(DeriveIden)]
enum WsTickets {
    Table,
    TicketHash,
    AccountId,
    ProjectId,
    ExpiresAt,
}

/// Failed logins per subject (`email:…` or `ip:…`) in the current window,
/// and the lock they lead to.
#[derive(DeriveIden)]
enum LoginFailures {
    Table,
    Subject,
    Failures,
    FirstAt,
    LockedUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Accounts::Table)
                    .if_not_exists()
                    .col(uuid(Accounts::Id).primary_key())
                    .col(string_uniq(Accounts::Email))
                    .col(string(Accounts::PasswordHash))
                    .col(boolean(Accounts::Admin))
                    .col(boolean(Accounts::Active))
                    .col(big_integer(Accounts::CreatedAt))
                    .col(big_integer(Accounts::UpdatedAt))
                    .col(big_integer_null(Accounts::LastLoginAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ProjectMembers::Table)
                    .if_not_exists()
                    .col(uuid(ProjectMembers::ProjectId))
                    .col(uuid(ProjectMembers::AccountId))
                    .col(string(ProjectMembers::Role))
                    .col(big_integer(ProjectMembers::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(ProjectMembers::ProjectId)
                            .col(ProjectMembers::AccountId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_members_project")
                            .from(ProjectMembers::Table, ProjectMembers::ProjectId)
                            .to(Projects::Table, Projects::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_members_account")
                            .from(ProjectMembers::Table, ProjectMembers::AccountId)
                            .to(Accounts::Table, Accounts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_members_account")
                    .table(ProjectMembers::Table)
                    .col(ProjectMembers::AccountId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuthSessions::Table)
                    .if_not_exists()
                    .col(uuid(AuthSessions::Id).primary_key())
                    .col(uuid(AuthSessions::AccountId))
                    .col(big_integer(AuthSessions::CreatedAt))
                    .col(big_integer(AuthSessions::ExpiresAt))
                    .col(big_integer_null(AuthSessions::RevokedAt))
                    .col(string_null(AuthSessions::RevokedReason))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_auth_sessions_account")
                            .from(AuthSessions::Table, AuthSessions::AccountId)
                            .to(Accounts::Table, Accounts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_auth_sessions_account")
                    .table(AuthSessions::Table)
                    .col(AuthSessions::AccountId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RefreshTokens::Table)
                    .if_not_exists()
                    .col(string(RefreshTokens::TokenHash).primary_key())
                    .col(uuid(RefreshTokens::SessionId))
                    .col(big_integer(RefreshTokens::ExpiresAt))
                    .col(big_integer_null(RefreshTokens::UsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_refresh_tokens_session")
                            .from(RefreshTokens::Table, RefreshTokens::SessionId)
                            .to(AuthSessions::Table, AuthSessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WsTickets::Table)
                    .if_not_exists()
                    .col(string(WsTickets::TicketHash).primary_key())
                    .col(uuid(WsTickets::AccountId))
                    .col(uuid(WsTickets::ProjectId))
                    .col(big_integer(WsTickets::ExpiresAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_ws_tickets_account")
                            .from(WsTickets::Table, WsTickets::AccountId)
                            .to(Accounts::Table, Accounts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LoginFailures::Table)
                    .if_not_exists()
                    .col(string(LoginFailures::Subject).primary_key())
                    .col(big_integer(LoginFailures::Failures))
                    .col(big_integer(LoginFailures::FirstAt))
                    .col(big_integer_null(LoginFailures::LockedUntil))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            LoginFailures::Table.into_iden(),
            WsTickets::Table.into_iden(),
            RefreshTokens::Table.into_iden(),
            AuthSessions::Table.into_iden(),
            ProjectMembers::Table.into_iden(),
            Accounts::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
