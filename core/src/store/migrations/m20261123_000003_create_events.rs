use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Append-only events. There is deliberately no column for a raw IP.
#[derive(DeriveIden)]
enum Events {
    Table,
    Seq,
    Id,
    ProjectId,
    Name,
    DistinctId,
    SessionId,
    Timestamp,
    ReceivedAt,
    Url,
    Referrer,
    UserAgent,
    Properties,
    IpHash,
    VisitorId,
    Enrichment,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .if_not_exists()
                    .col(pk_auto(Events::Seq).big_integer())
                    .col(uuid(Events::Id))
                    .col(uuid(Events::ProjectId))
                    .col(string(Events::Name))
                    .col(string_null(Events::DistinctId))
                    .col(string_null(Events::SessionId))
                    .col(big_integer(Events::Timestamp))
                    .col(big_integer(Events::ReceivedAt))
                    .col(text_null(Events::Url))
                    .col(text_null(Events::Referrer))
                    .col(text_null(Events::UserAgent))
                    .col(json(Events::Properties))
                    .col(string_null(Events::IpHash))
                    .col(string_null(Events::VisitorId))
                    .col(json(Events::Enrichment))
                    .to_owned(),
            )
            .await?;
        let indexes = [
            (
                "ux_events_project_id",
                vec![Events::ProjectId, Events::Id],
                true,
            ),
            (
                "ix_events_project_timestamp",
                vec![Events::ProjectId, Events::Timestamp],
                false,
            ),
            (
                "ix_events_project_name_timestamp",
                vec![Events::ProjectId, Events::Name, Events::Timestamp],
                false,
            ),
            (
                "ix_events_project_session",
                vec![Events::ProjectId, Events::SessionId],
                false,
            ),
            (
                "ix_events_project_seq",
                vec![Events::ProjectId, Events::Seq],
                false,
            ),
        ];
        for (name, cols, unique) in indexes {
            let mut index = Index::create();
            index.name(name).table(Events::Table).if_not_exists();
            for col in cols {
                index.col(col);
            }
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Events::Table).to_owned())
            .await
    }
}
