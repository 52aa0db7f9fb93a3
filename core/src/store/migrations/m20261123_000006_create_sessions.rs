use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Sessions, kept up to date by the writer from the events that carry a
/// session id: start, end, duration, counts, entry and exit page, bounce.
#[derive(DeriveIden)]
enum Sessions {
    Table,
    ProjectId,
    SessionId,
    VisitorId,
    DistinctId,
    StartedAt,
    EndedAt,
    DurationMs,
    Events,
    Pageviews,
    EntryPage,
    ExitPage,
    Bounce,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .if_not_exists()
                    .col(uuid(Sessions::ProjectId))
                    .col(string(Sessions::SessionId))
                    .col(string_null(Sessions::VisitorId))
                    .col(string_null(Sessions::DistinctId))
                    .col(big_integer(Sessions::StartedAt))
                    .col(big_integer(Sessions::EndedAt))
                    .col(big_integer(Sessions::DurationMs))
                    .col(big_integer(Sessions::Events))
                    .col(big_integer(Sessions::Pageviews))
                    .col(text_null(Sessions::EntryPage))
                    .col(text_null(Sessions::ExitPage))
                    .col(boolean(Sessions::Bounce))
                    .primary_key(
                        Index::create()
                            .col(Sessions::ProjectId)
                            .col(Sessions::SessionId),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            (
                "ix_sessions_project_started",
                vec![Sessions::ProjectId, Sessions::StartedAt],
            ),
            // Not on `ended_at`: it changes with every event, and the
            // writer's upsert would move the entry each time.
            (
                "ix_sessions_project_visitor",
                vec![Sessions::ProjectId, Sessions::VisitorId],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(Sessions::Table).if_not_exists();
            for c in cols {
                index.col(c);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Sessions::Table).to_owned())
            .await
    }
}
