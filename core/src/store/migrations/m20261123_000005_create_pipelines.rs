use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// A project's configured pipeline: its ordered stages as JSON. A project
/// without a row uses the instance's default pipeline.
#[derive(DeriveIden)]
enum ProjectPipelines {
    Table,
    ProjectId,
    Stages,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ProjectPipelines::Table)
                    .if_not_exists()
                    .col(uuid(ProjectPipelines::ProjectId).primary_key())
                    .col(json(ProjectPipelines::Stages))
                    .col(big_integer(ProjectPipelines::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ProjectPipelines::Table).to_owned())
            .await
    }
}
