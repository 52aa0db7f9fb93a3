use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Events a plugin failed on (under `dead_letter`) or that could not be
/// stored, with the original payload, to be inspected and replayed.
#[derive(DeriveIden)]
enum DeadLetters {
    Table,
    Seq,
    Id,
    ProjectId,
    EventId,
    Payload,
    Plugin,
    Error,
    CreatedAt,
    ReplayedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DeadLetters::Table)
                    .if_not_exists()
                    .col(pk_auto(DeadLetters::Seq).big_integer())
                    .col(uuid_uniq(DeadLetters::Id))
                    .col(uuid(DeadLetters::ProjectId))
                    .col(uuid_null(DeadLetters::EventId))
                    .col(json(DeadLetters::Payload))
                    .col(string(DeadLetters::Plugin))
                    .col(text(DeadLetters::Error))
                    .col(big_integer(DeadLetters::CreatedAt))
                    .col(big_integer_null(DeadLetters::ReplayedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_dead_letters_project_seq")
                    .table(DeadLetters::Table)
                    .col(DeadLetters::ProjectId)
                    .col(DeadLetters::Seq)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DeadLetters::Table).to_owned())
            .await
    }
}
